"""An SMS reply signed by a provider whose clock runs ahead, against a real server whose
consent changes may not be dated ahead at all."""
import pytest

from .test_sms_inbound import reply, sms_consent, texted  # noqa: F401 (a fixture)


@pytest.fixture
def settings(settings):
    """Consent changes dated in the future are refused (`event_future_tolerance_s` 0); the
    webhook's signatures may still be up to `webhook_tolerance_seconds` (300) from now."""
    return settings.model_copy(update={"event_future_tolerance_s": 0.0})


async def test_a_stop_signed_by_a_clock_ahead_of_ours_still_opts_out(texted, profiles,  # noqa: F811
                                                                      settings):
    """A STOP signed 2 s ahead passed the signature check (within 300 s) and its consent change
    carried the signed time, which the profile refused as in the future: 400, and the provider
    does not retry a 400: the STOP was lost and the texts kept coming. The change is dated at
    the signed time, or as far ahead as a consent change may be (here: now)."""
    assert await reply(settings, "+447700900123", "STOP", age=-2) == 200
    assert await sms_consent(profiles, texted) is False
