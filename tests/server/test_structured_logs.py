"""JSON log lines of a real `python -m server`: a request id per RPC (the caller's or a new one,
returned in the trailing metadata), the caller's W3C trace context, an access line per call, and
no raw user id."""
import json
import re

import grpc

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.logging import parse_traceparent
from server.security.secrets import Secrets

USER = "carol.pii-4711"
TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) ")


def trailing_id(metadata) -> str:
    return dict(metadata or ())["x-request-id"]


def calls(target: str) -> dict[str, str]:
    """Three calls; returns the request id each got back."""
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.ProfileServiceStub(ch)
        try:
            stub.GetProfile(pb.GetProfileRequest(user_id=USER),
                            metadata=[("x-request-id", "req-abc-1"), ("traceparent", TRACEPARENT)])
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
            missing = trailing_id(err.trailing_metadata())
        _, call = stub.TrackEvents.with_call(pb.TrackEventsRequest(events=[pb.Event(
            event_id="e1", user_id=USER, type="view", timestamp=1.7e9)]))
        made = trailing_id(call.trailing_metadata())
        _, call = stub.TrackEvents.with_call(pb.TrackEventsRequest(),
                                             metadata=[("x-request-id", "no spaces {} or json\" here")])
        replaced = trailing_id(call.trailing_metadata())
    return {"missing": missing, "made": made, "replaced": replaced}


def test_json_lines_with_request_ids_traces_and_no_user_ids(server_process, tmp_path):
    secrets = tmp_path / "secrets"
    server = server_process(env={"TAILOR_LOG_FORMAT": "json", "TAILOR_ACCESS_LOG": "true",
                                 "TAILOR_SECRETS_DIR": str(secrets)})
    ids = calls(server.target)
    log = server.stop()

    assert ids["missing"] == "req-abc-1"
    assert re.fullmatch(r"[0-9a-f]{16}", ids["made"]) and re.fullmatch(r"[0-9a-f]{16}", ids["replaced"])
    assert not [line for line in log.splitlines() if TEXT_LINE.match(line)]
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(r["message"].startswith("serving on") for r in lines)
    assert all({"ts", "level", "logger", "message", "pid"} <= set(r) for r in lines)

    traced = [r for r in lines if r.get("request_id") == "req-abc-1"]
    assert {r["logger"] for r in traced} >= {"tailor.errors", "tailor.access"}
    assert all(r["trace_id"] == TRACE and r["parent_id"] == PARENT for r in traced)
    (access,) = [r for r in traced if r["logger"] == "tailor.access"]
    assert access["message"].startswith("/tailor.v1.ProfileService/GetProfile NOT_FOUND ")
    for key in ("made", "replaced"):
        (line,) = [r for r in lines if r.get("request_id") == ids[key]]
        assert line["message"].startswith("/tailor.v1.ProfileService/TrackEvents OK ")
        assert "trace_id" not in line

    assert USER not in log and "carol" not in log
    ring = Secrets.load(secrets, generate=False, environ={})["user-id"]
    error = next(r for r in traced if r["logger"] == "tailor.errors")
    assert ring.mac(USER.encode())[:16] in error["message"]


def test_traceparent_parsing_keeps_only_valid_headers():
    assert parse_traceparent(TRACEPARENT) == (TRACE, PARENT)
    for bad in ("", "garbage", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",
                f"ff-{TRACE}-{PARENT}-01", f"00-{TRACE.upper()}-{PARENT}-01", TRACEPARENT + "\n"):
        assert parse_traceparent(bad) == ("", ""), bad


async def test_recommend_answers_with_the_calls_request_id(channel):
    from protos.tailor.v1 import recommendation_pb2 as rpb
    from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
    stub = rpb_grpc.RecommendationServiceStub(channel)
    call = stub.Recommend(rpb.RecommendRequest(user_id="u1", k=2), metadata=(("x-request-id", "rec-1"),))
    assert (await call).request_id == "rec-1" == trailing_id(await call.trailing_metadata())
    call = stub.Recommend(rpb.RecommendRequest(user_id="u1", k=2))
    made = trailing_id(await call.trailing_metadata())
    assert (await call).request_id == made and re.fullmatch(r"[0-9a-f]{16}", made)
    call = stub.RecommendBatch(rpb.RecommendBatchRequest(requests=[rpb.RecommendRequest(
        user_id=u, k=2) for u in ("u1", "u2")]), metadata=(("x-request-id", "b-7"),))
    assert [r.request_id for r in (await call).responses] == ["b-7.0", "b-7.1"]


def test_a_spaced_warning_is_due_once_per_key_and_period():
    from server.logging import Spaced
    now = [0.0]
    spaced = Spaced(60.0, kept=2, clock=lambda: now[0])
    assert [spaced.due("a"), spaced.due("a"), spaced.due("b")] == [True, False, True]
    now[0] = 59.9
    assert spaced.due("a") is False
    now[0] = 60.0
    assert [spaced.due("a"), spaced.due("a")] == [True, False]
    assert spaced.due("c") is True  # a third key: the two remembered are forgotten
    assert spaced.due("b") is True
