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
    with pytest.raises(ValueError, match="line 1, entry 2: expected 'kid:base64key'"):
        read_keys("erasure", None, {env_name("erasure"): f"{entry('k', KEY_A)},x:"})


def test_a_note_holding_a_comma_is_a_note(tmp_path):
    """The file was split on commas before its `#` notes were dropped: a note with a comma
    read as a malformed key, and the server would not start."""
    (tmp_path / "erasure.keys").write_text(
        f"# Q1 campaign links, drop after 2026-09-30\n{entry('f2', KEY_B)}  # new, signs\n"
        f"{entry('f1', KEY_A)}\n")
    assert read_keys("erasure", tmp_path, {}) == (("f2", KEY_B), ("f1", KEY_A))
