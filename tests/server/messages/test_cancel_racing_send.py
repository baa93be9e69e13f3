"""CancelSend racing a scheduled message being handed to the relay (a real relay on loopback
answering DATA late, a real store): the message went, so it counts sent, its decision stands
and its `email_sent` event is recorded; the cancel stops only what had not started going."""
import asyncio

from protos.tailor.v1 import campaign_pb2 as cpb

from .conftest import email_spec
from .test_cancel_send import cancel, pending
from .test_compose_deferred import compose, deferred, sent_events, settings  # noqa: F401
from .test_send_campaign import audience, until_done


async def test_a_scheduled_message_on_its_way_when_cancelled_counts_sent(
        tailor_server, sink, campaigns, profiles, messaging):
    """The cancel settled it suppressed `cancelled` and withdrew its decision while the relay
    held it: it arrived, counted cancelled, no event, no cap counting it."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["h1"])
    sink.delay_data = 3.0  # the relay has the message; its 250 comes 3 s later
    with deferred(tailor_server, 1.0):
        got = await compose(messaging, "h1", "req-h1")
    await asyncio.to_thread(sink.wait_for, 1, 15)  # on its way: the relay has it
    stopped = await cancel(messaging, got.send_id)
    assert stopped.cancelled_at > 0
    done = await until_done(messaging, got.send_id, 15)
    assert (done.sent, dict(done.suppressed_by_reason), done.pending) == (1, {}, 0)
    assert await pending(campaigns) == ["h1"]  # it went: its decision stands
    assert await sent_events(profiles) == [got.decision_id]
    with deferred(tailor_server, 1.0):
        again = await compose(messaging, "h1", "req-h1")
    assert (again.decision_id, again.delivered, again.suppressed) == (got.decision_id, True,
                                                                      False)


async def test_a_scheduled_message_cancelled_just_before_its_send_at_does_not_go(
        tailor_server, sink, campaigns, profiles, messaging):
    """Within `sends.DUE_MARGIN` of its send_at the cancel leaves it to its runner: it runs
    at its send_at, finds the cancel and settles it; nothing goes."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["j1"])
    with deferred(tailor_server, 0.5):
        got = await compose(messaging, "j1")
    stopped = await cancel(messaging, got.send_id)
    assert stopped.cancelled_at > 0
    done = await until_done(messaging, got.send_id, 15)
    assert (done.sent, dict(done.suppressed_by_reason), done.pending) == (0, {"cancelled": 1}, 0)
    await asyncio.sleep(1.0)
    assert sink.arrived == [] and await pending(campaigns) == []
    assert await sent_events(profiles) == []
