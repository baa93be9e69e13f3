"""Unsubscribe tokens: sealed (no user id in clear), signed with a key id, rotation-safe."""
import base64

import pytest

from server.messages.unsubscribe import BadToken, Unsubscribe, UnsubscribeTokens
from server.security.secrets import Keyring


@pytest.fixture
def ring() -> Keyring:
    return Keyring.generate("unsubscribe", "k1")


def test_a_token_names_user_channel_and_campaign_and_hides_them(ring):
    tokens = UnsubscribeTokens(ring)
    token = tokens.issue("alice@example.com", "email", "spring-sale")
    assert tokens.read(token) == Unsubscribe("alice@example.com", "email", "spring-sale")
    assert token.endswith(".k1") and token.startswith("2.")
    body = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    for clear in (b"alice", b"example", b"spring", b"email"):
        assert clear not in body and clear.decode() not in token
    assert tokens.issue("alice@example.com", "email", "spring-sale") == token  # deterministic
    assert tokens.issue("alice@example.com", "sms", "spring-sale") != token


def test_forged_truncated_or_foreign_tokens_do_not_verify(ring):
    tokens = UnsubscribeTokens(ring)
    token = tokens.issue("u1", "email", "c")
    version, body, tag, kid = token.split(".")
    flipped = body[:5] + ("A" if body[5] != "A" else "B") + body[6:]
    for bad in (f"{version}.{flipped}.{tag}.{kid}", token[:-1], token[:20], "", "x" * 5000,
                f"3.{body}.{tag}.{kid}", f"1.{body}.{tag}.{kid}", f"{version}.{body}.{tag}.k2",
                UnsubscribeTokens(Keyring.generate("unsubscribe", "k1")).issue("u1", "email", "c")):
        with pytest.raises(BadToken):
            tokens.read(bad)


def test_tokens_of_a_rotated_key_keep_verifying_until_it_is_dropped(ring):
    old = UnsubscribeTokens(ring).issue("u1", "sms", "c")
    rotated = ring.rotated("k2")
    assert UnsubscribeTokens(rotated).read(old).user_id == "u1"
    assert UnsubscribeTokens(rotated).issue("u1", "sms", "c").endswith(".k2")
    with pytest.raises(BadToken):
        UnsubscribeTokens(Keyring("unsubscribe", rotated.keys[:1])).read(old)


def _sealed_by_the_format(key: bytes, kid: str, payload: bytes, version: str = "2") -> str:
    """A token built from the module's documented format with cryptography's own CTR mode
    (version 2: the payload NUL-padded to a multiple of 64 bytes)."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    enc = hmac.new(key, b"unsubscribe/enc", hashlib.sha256).digest()
    mac = hmac.new(key, b"unsubscribe/mac", hashlib.sha256).digest()
    if version == "2":
        payload += b"\0" * (-len(payload) % 64)
    iv = hmac.new(mac, b"iv" + payload, hashlib.sha256).digest()[:16]
    ctr = Cipher(algorithms.AES(enc), modes.CTR(iv)).encryptor()
    body = base64.urlsafe_b64encode(iv + ctr.update(payload) + ctr.finalize()).rstrip(b"=").decode()
    tag = hmac.new(mac, f"{version}.{body}.{kid}".encode(), hashlib.sha256).digest()
    return f"{version}.{body}.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode()}.{kid}"


@pytest.mark.parametrize("user", ["u", "x" * 13, "bob@example.com", "ü" * 40, "y" * 300])
def test_tokens_are_the_documented_aes_ctr_seal_of_any_length(ring, user):
    """The kept ECB context gives CTR's bytes: tokens of every payload length (partial last
    block, many blocks) equal the format's, so links already sent keep verifying."""
    (kid, key), = ring.keys
    tokens = UnsubscribeTokens(ring)
    want = _sealed_by_the_format(key, kid, "\x1f".join((user, "email", "camp")).encode())
    assert tokens.issue(user, "email", "camp") == want
    assert tokens.read(want) == Unsubscribe(user, "email", "camp")


def test_a_tokens_length_does_not_give_the_user_ids_away(ring):
    """Version 1 tokens grew by the user id's length (CTR keeps it): a link told an email-address
    id from a customer number, and the address's length. Ids up to ~60 bytes now all make tokens
    of one length."""
    tokens = UnsubscribeTokens(ring)
    lengths = {len(tokens.issue(user, "email", "camp")) for user in ("7", "c-1234", "bob@example.com",
                                                                      "a-much-longer.address@example.com")}
    assert len(lengths) == 1


@pytest.mark.parametrize("user", ["u", "bob@example.com", "y" * 300])
def test_version_1_links_already_sent_keep_working(ring, user):
    (kid, key), = ring.keys
    old = _sealed_by_the_format(key, kid, "\x1f".join((user, "email", "camp")).encode(), "1")
    assert UnsubscribeTokens(ring).read(old) == Unsubscribe(user, "email", "camp")
