"""TailorStoreFull pages when the store refuses writes at its map ceiling, and only then: a
profile over its attribute limit also answers RESOURCE_EXHAUSTED, but that is the caller's
doing, and the store has room."""
import logging
import time

import grpc
import yaml
from prometheus_client import REGISTRY

from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from tests.conftest import serving
from tests.test_deploy_files import DEPLOY

REFUSED = "tailor_store_full_refusals_total"


def refused() -> float:
    return REGISTRY.get_sample_value(REFUSED) or 0.0


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_only_writes_refused_at_the_ceiling_count_as_store_full(settings, caplog):
    """... and the refused writes are logged at WARNING (one line a call: the callers are
    answered RESOURCE_EXHAUSTED; at ERROR, a line a call buried the errors that are not)."""
    caplog.set_level(logging.INFO)
    settings.lmdb_map_size, settings.lmdb_max_map_size = 1 << 20, 4 << 20
    async with serving(settings) as (_, ch):
        profiles = ppb_grpc.ProfileServiceStub(ch)
        before = refused()
        codes = [await _code(profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id="many", attributes={f"k{i}-{j}": "v" for j in range(64)}))) for i in range(5)]
        assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED  # 320 > 256 attributes
        assert refused() == before
        now, full = time.time(), 0
        for batch in range(2000):  # fill until the store refuses
            events = [ppb.Event(event_id=f"f{batch}-{i}", user_id=f"full{i % 20}", type="view",
                                item_id=f"item{i}", timestamp=now - 100 + batch * 1e-2 + i * 1e-5,
                                attributes={"pad": "p" * 900}) for i in range(100)]
            code = await _code(profiles.TrackEvents(ppb.TrackEventsRequest(events=events)))
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                full += 1
                if full == 2:
                    break
        assert full == 2
        assert refused() == before + 2
    told = [r for r in caplog.records if "StoreFull" in r.getMessage()
            and r.name.startswith(("tailor.profiles", "tailor.batching"))]
    assert told and all(r.levelno == logging.WARNING for r in told), \
        [(r.name, r.levelname, r.getMessage()) for r in told]


def test_the_store_full_alert_reads_the_refusals_not_every_resource_exhausted():
    rules = yaml.safe_load((DEPLOY / "monitoring" / "alerts.yml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == "TailorStoreFull"]
    assert REFUSED in rule["expr"] and "RESOURCE_EXHAUSTED" not in rule["expr"]


def test_server_errors_leave_out_the_resource_exhausted_a_caller_causes():
    """TailorServerErrors counts "codes a client cannot cause"; a caller over a limit (the
    attribute refusal above) answers RESOURCE_EXHAUSTED, and the store's own refusals page
    through TailorStoreFull."""
    rules = yaml.safe_load((DEPLOY / "monitoring" / "alerts.yml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == "TailorServerErrors"]
    (excluded,) = [part.split('"')[1] for part in rule["expr"].split("grpc_code!~")[1:]]
    assert "RESOURCE_EXHAUSTED" in excluded.split("|")
