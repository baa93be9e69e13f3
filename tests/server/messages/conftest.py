"""A real server with the public endpoint's port set, a demo bundle, and helpers."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import free_port, serving

SMS_KEY, SMS_OLD_KEY = b"provider-shared-secret", b"the-providers-previous-one"
EMAIL_HTML = """<p>Hi {{ first_name | default('there') }},</p>
<ul>{% for it in recommend(4, category=interests[0] if interests else none) %}
<li data-item="{{ it.item_id }}"><a href="{{ it.url }}">{{ it.title }}</a>
 {{ '%.2f' | format(it.price) }} <img src="{{ it.image }}"></li>{% endfor %}</ul>
<a href="{{ unsubscribe_url }}">Unsubscribe</a>"""


def messages_settings(tmp: Path, demo_bundle: Path):
    """Settings with the public endpoint's port set, data and secrets under `tmp`; the
    `sms-webhook` keyring holds the provider's secret and the one it had before."""
    from server.config import Settings
    (tmp / "secrets").mkdir()
    (tmp / "secrets" / "sms-webhook.keys").write_text("".join(
        f"{kid}:{base64.b64encode(key).decode()}\n" for kid, key in (("new", SMS_KEY),
                                                                     ("old", SMS_OLD_KEY))))
    return Settings(port=0, data_dir=tmp / "data", bundle=demo_bundle, grace_seconds=1.0,
                    lmdb_sync=False, bundle_poll_seconds=0.1, secrets_dir=tmp / "secrets",
                    public_http_port=free_port())


@pytest.fixture
def settings(tmp_path, demo_bundle):
    return messages_settings(tmp_path, demo_bundle)


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory, demo_bundle):
    """`settings` of the server a module's tests share (`module_messages_server`)."""
    return messages_settings(tmp_path_factory.mktemp("messages-server"), demo_bundle)


@pytest_asyncio.fixture(scope="module")
async def module_messages_server(module_settings):
    """(server, channel): one real server of `module_settings`, shared by a module's tests
    that write only under ids of their own (users, numbers, campaigns) and count nothing
    global, so none sees what another changed."""
    async with serving(module_settings) as pair:
        yield pair


@pytest.fixture
def campaigns(channel):
    return campaign_pb2_grpc.CampaignServiceStub(channel)


@pytest.fixture
def profiles(channel):
    return profile_pb2_grpc.ProfileServiceStub(channel)


@pytest.fixture
def messaging(channel):
    return messaging_pb2_grpc.MessagingServiceStub(channel)


@pytest.fixture
def catalog(demo_bundle) -> dict:
    with np.load(demo_bundle / "items.npz") as npz:
        items = {k: npz[k] for k in npz.files}
    names = items["category_names"][items["category"]]
    return {"ids": items["item_ids"].tolist(), "category": dict(zip(items["item_ids"].tolist(),
                                                                    names.tolist())),
            "images": dict(zip(items["item_ids"].tolist(), items["images"].tolist()))}


@pytest.fixture
def sink():
    """An SMTP sink on loopback (aiosmtpd) keeping what it receives; modules needing a relay
    that stalls define their own."""
    with SmtpSink(free_port()) as s:
        yield s


def relayed(settings, sink, **more):
    """`settings` sending email through the test SMTP `sink` (plain, on loopback), plus `more`."""
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": sink.controller.port,
                                       "smtp_security": "none", **more})


def email_spec(cid="mail", **content) -> cpb.CampaignSpec:
    content = {"subject": "Hi {{ first_name | default('there') }}", "html": EMAIL_HTML,
               "text": "Hi {{ first_name | default('there') }}: {{ unsubscribe_url }}", **content}
    return cpb.CampaignSpec(campaign_id=cid, channel="email", policy="fixed",
                            variants=[cpb.Variant(id="v1", content=content)])


async def interested_user(profiles, catalog, user: str, category: str, n: int = 6,
                          first_name: str | None = None) -> list[str]:
    """Give `user` views of `n` items of `category` (their top interest); returns the items."""
    items = [i for i in catalog["ids"] if catalog["category"][i] == category][:n]
    now = time.time()
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[
        ppb.Event(event_id=f"{user}-{k}", user_id=user, type="view", item_id=item,
                  timestamp=now - 60 + k) for k, item in enumerate(items)]))
    if first_name is not None:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"first_name": first_name}))
    return items


async def stored_attributes(server, user: str, **attributes: str) -> None:
    """`attributes` written to `server`'s store directly, as a Tailor before UpsertAttributes
    checked addresses stored them (an `email` or `phone` it refuses now: `check_address`)."""
    await asyncio.to_thread(server.profiles.repo.update_meta, user,
                            lambda meta: meta["attributes"].update(attributes))


async def opt_in(profiles, user: str, channel: str = "email") -> None:
    """`user` opts in to marketing on `channel` (email and SMS need it: `consent_defaults`)."""
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel=channel, opted_in=True,
                                                    source="signup", purpose="marketing"))


@contextlib.contextmanager
def keys_opened(store):
    """The keys `store.open_for_user` opens meanwhile, in order (the real method opens them)."""
    opened, open_for_user = [], store.open_for_user

    def counted(txn, key, stored):
        opened.append(key)
        return open_for_user(txn, key, stored)
    store.open_for_user = counted
    try:
        yield opened
    finally:
        del store.open_for_user


def pytest_configure(config):
    config.addinivalue_line("markers", "relay_down: the SMTP relay's port has nothing listening")
