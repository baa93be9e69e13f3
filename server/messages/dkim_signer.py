"""DKIM signing of outgoing email (RFC 6376, dkimpy), when a key, selector and domain are set.

The signature covers the headers a receiver judges a bulk message by, the one-click unsubscribe
headers among them (RFC 8058 section 4 asks for `List-Unsubscribe` and `List-Unsubscribe-Post`
to be signed), with relaxed/relaxed canonicalization, so a relay that refolds headers or
changes trailing whitespace does not break it. The public key goes into DNS as a TXT record at
`<selector>._domainkey.<domain>` (`v=DKIM1; k=rsa; p=<base64 DER>`). Signing happens once per
message at flatten time, so SendCampaign stores (and a resend after a crash repeats) the signed
bytes.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import FailedPrecondition

__all__ = ["DkimSigner", "SIGNED_HEADERS"]

SIGNED_HEADERS = (b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version",
                  b"Content-Type", b"List-Unsubscribe", b"List-Unsubscribe-Post")


class DkimSigner:
    def __init__(self, domain: str, selector: str, private_key: bytes):
        self.domain, self.selector, self.key = domain.encode(), selector.encode(), private_key

    @classmethod
    def from_settings(cls, s) -> DkimSigner | None:
        """None unless `dkim_key_file`, `dkim_selector` and `dkim_domain` are all set."""
        given = [s.dkim_key_file, s.dkim_selector, s.dkim_domain]
        if not any(given):
            return None
        if not all(given):
            raise FailedPrecondition("DKIM needs dkim_key_file, dkim_selector and dkim_domain "
                                     "together")
        signer = cls(s.dkim_domain, s.dkim_selector, Path(s.dkim_key_file).read_bytes())
        signer.sign(b"From: check@" + signer.domain + b"\r\n\r\nkey check\r\n")  # a bad key stops here
        return signer

    def sign(self, message: bytes) -> bytes:
        """`message` with its DKIM-Signature header in front."""
        import dkim  # here: only a server with a DKIM key loads dkimpy (and dnspython)

        try:
            header = dkim.sign(message, self.selector, self.domain, self.key,
                               canonicalize=(b"relaxed", b"relaxed"),
                               include_headers=list(SIGNED_HEADERS))
        except dkim.DKIMException as err:
            raise FailedPrecondition(f"DKIM signing failed: {err}") from None
        return header + message
