"""A refused setting that holds a secret is named, never echoed (server/config.py
`settings_error`): the line goes to stderr and the service manager's log, and a relay password
written as a TOML number was printed in it whole (`... (got 12345678)`)."""
import pytest
from pydantic import ValidationError

from server.config import Settings, settings_error
from tests.conftest import run_module


def test_a_refused_secret_setting_is_named_not_echoed(tmp_path):
    config = tmp_path / "tailor.toml"
    config.write_text("smtp_password = 20261207042\n")
    refused = run_module("server", "serve", "--config", str(config), "--port", "0",
                         "--data-dir", str(tmp_path / "data"), check=False, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "smtp_password (TAILOR_SMTP_PASSWORD" in refused.stderr
    assert "valid string" in refused.stderr  # what was wrong with it
    assert "20261207042" not in refused.stderr


def test_other_refused_settings_still_show_what_was_given():
    with pytest.raises(ValidationError) as err:
        Settings(workers="many")
    assert "(got 'many')" in settings_error(err.value)
