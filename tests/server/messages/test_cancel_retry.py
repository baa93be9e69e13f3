"""A CancelSend that comes while a message waits between transient failures (a relay's 451)
ends its retries: no further attempt, no dead letter, and the message counts suppressed
`cancelled`, as every recipient the cancel stopped (a real relay on loopback, a real store),
its decision kept (the failed attempt may have reached the relay). Before 50b1851, it went on
retrying after the cancel: the relay's next answer being 250, it arrived 3 s after the cancel,
counted sent; before messages8, it counted failed `cancelled`, apart from the others."""
import asyncio
import time

import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec, relayed
from .test_cancel_send import cancel
from .test_send_campaign import audience, until_done
from .test_withheld_after_an_attempt import decisions

BACKOFF = 3.0


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, delivery_attempts=4, delivery_backoff_seconds=BACKOFF)


async def test_a_cancel_ends_the_retries_of_a_message_in_its_backoff(tailor_server, sink,
                                                                     campaigns, profiles,
                                                                     messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["g1"])
    replies = sink.rcpt_replies["g1@example.com"] = ["451 4.7.1 try later", "250 OK"]
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=["g1"], rate_per_second={"email": 100}))
    deadline = time.time() + 20
    while len(replies) > 1 and time.time() < deadline:  # the first attempt was refused
        await asyncio.sleep(0.02)
    assert len(replies) == 1
    t0 = time.monotonic()
    await cancel(messaging, started.send_id)
    done = await until_done(messaging, started.send_id, 2 * BACKOFF)
    assert time.monotonic() - t0 < BACKOFF  # not after the backoff
    assert (done.sent, dict(done.suppressed_by_reason), dict(done.failed_by_reason),
            done.pending) == (0, {"cancelled": 1}, {}, 0)
    assert [u for u, _ in await decisions(campaigns)] == ["g1"]  # kept: it may have gone
    await asyncio.sleep(BACKOFF + 0.5)  # past the next attempt's time
    assert sink.arrived == []
    letters = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))
    assert list(letters.letters) == []
