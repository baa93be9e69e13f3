"""The throwaway certificates' keys are the owner's only: a key every user may read makes a
server started on it warn (`--tls-key ... every user may read it`), 4 lines a 2-worker start in
every bench and soak log."""
import stat

from loadtests.certs import CertificateAuthority


def test_issued_keys_are_the_owners_only(tmp_path):
    ca = CertificateAuthority(tmp_path)
    issued = [ca.issue("server"), ca.issue("me", client=True)]
    issued.append(ca.issue("server"))  # issued again over the first: still the owner's only
    for it in issued:
        assert stat.S_IMODE(it.key.stat().st_mode) & 0o077 == 0, oct(it.key.stat().st_mode)
    assert stat.S_IMODE((tmp_path / "tailor-test-ca.key").stat().st_mode) & 0o077 == 0
