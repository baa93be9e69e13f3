"""SendCampaign with one recipient whose contact history is damaged (tests/server/
test_damaged_contacts.py): that one is settled suppressed `contact_history_damaged`, every
other one is sent to."""
import time

import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import profile_pb2 as ppb
from tests.server.test_damaged_contacts import damage

from .conftest import email_spec, relayed
from .test_send_campaign import audience, sent_beside


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink)


async def test_a_send_settles_the_damaged_recipient_alone(tailor_server, sink, campaigns,
                                                           profiles, messaging):
    spec = email_spec()
    spec.frequency_caps.append(cpb.FrequencyCap(channel="email", max=3, window_seconds=86400))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    users = [f"s{i}" for i in range(8)]
    await audience(profiles, users)
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="first", user_id="s3", type="email_sent", timestamp=time.time())]))
    damage(tailor_server.store, "s3")
    await sent_beside(messaging, sink, users, "s3", "contact_history_damaged")
