"""The keyring format training reads without the server: environment first, then the file."""
import base64

import pytest

from contract.keyring import env_name, read_keys

KEY_A, KEY_B = b"a" * 16, b"b" * 32


def entry(kid, key):
    return f"{kid}:{base64.b64encode(key).decode()}"


def test_environment_wins_over_the_file_and_keeps_the_order(tmp_path):
    (tmp_path / "erasure.keys").write_text(f"# old\n{entry('f1', KEY_A)}\n")
    env = {env_name("erasure"): f"{entry('e2', KEY_B)},{entry('e1', KEY_A)}"}
    assert env_name("erasure") == "TAILOR_SECRET_ERASURE"
    assert read_keys("erasure", tmp_path, env) == (("e2", KEY_B), ("e1", KEY_A))
    assert read_keys("erasure", tmp_path, {env_name("erasure"): " "}) == (("f1", KEY_A),)


def test_missing_and_malformed_keyrings_say_what_to_provide(tmp_path):
    with pytest.raises(ValueError, match="TAILOR_SECRET_ERASURE or write .*erasure.keys"):
        read_keys("erasure", tmp_path, {})
    with pytest.raises(ValueError, match="entry 1: expected 'kid:base64key'"):
        read_keys("erasure", None, {env_name("erasure"): entry("k", b"short")})
