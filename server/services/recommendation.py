"""tailor.v1.RecommendationService."""
from __future__ import annotations

import logging

from protos.tailor.v1 import recommendation_pb2 as pb
from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc

from ..config import Settings
from ..errors import InvalidArgument, TailorError, detail, grpc_errors
from ..logging import current_call
from ..recommend import Recommender, RecQuery, RecResult
from ..rpc import REQUEST_ID_KEY
from ..validation import check_count
from .recommend_wire import batch_bytes, response_bytes

__all__ = ["RecommendationServicer", "RecommendConverter"]

logger = logging.getLogger("tailor.recommend")

class RecommendConverter:
    @staticmethod
    def to_query(req: pb.RecommendRequest) -> RecQuery:
        return RecQuery(user_id=req.user_id, k=req.k, channel=req.channel,
                        categories=tuple(req.categories), exclude_item_ids=tuple(req.exclude_item_ids),
                        context=tuple(c.items()) if (c := req.context) else ())

    @staticmethod
    def from_error(err: TailorError, request_id: str = "") -> pb.RecommendResponse:
        """A partial RecommendBatch's answer to an entry that failed with `err`."""
        return pb.RecommendResponse(request_id=request_id, error=pb.RecommendError(
            code=err.status.name, message=detail(err)))

    @staticmethod
    def from_result(res: RecResult, request_id: str = "") -> pb.RecommendResponse:
        items, rows = res.bundle.items, res.rows
        out = pb.RecommendResponse(model_version=res.bundle.version, request_id=request_id,
                                   cold_start=res.cold_start)
        add = out.items.add
        # One vectorised gather + tolist() per column: no numpy scalars reach protobuf.
        for item_id, score, rscore, category, title, price, url in zip(
                items["item_ids"][rows].tolist(), res.scores.tolist(), res.retrieval_scores.tolist(),
                items["category_names"][items["category"][rows]].tolist(),
                items["titles"][rows].tolist(), items["price"][rows].tolist(), items["urls"][rows].tolist()):
            add(item_id=item_id, score=score, retrieval_score=rscore, category=category, title=title,
                price=price, url=url)
        return out


class RecommendationServicer(pb_grpc.RecommendationServiceServicer):
    def __init__(self, settings: Settings, recommender: Recommender):
        self.settings = settings
        self.recommender = recommender

    # Both answer with the response's bytes (`recommend_wire`: items pre-serialized per bundle;
    # `registration` passes bytes through), which parse as `RecommendConverter.from_result`.
    @grpc_errors
    async def Recommend(self, request: pb.RecommendRequest, context) -> bytes:
        _check_size(request, self.settings.limits.request_bytes)
        (request_id, given), query = _request_id(context), RecommendConverter.to_query(request)
        result = await self.recommender.recommend(query, request_id, record=False)
        body = response_bytes(result, request_id)
        self.recommender.check_answer(len(body), "k")  # recorded only once it can be sent
        self.recommender.record(request_id, query, result, given=given)
        return body

    @grpc_errors
    async def RecommendBatch(self, request: pb.RecommendBatchRequest, context) -> bytes:
        _check_size(request, self.settings.limits.batch_request_bytes)
        # counted before the ids and queries are built: 2 million empty entries (4 MiB) held the
        # event loop 9 s converting, refused only then by `recommend_many`'s own check
        check_count("requests", len(request.requests), self.settings.limits.batch_users)
        call_id, given = _request_id(context)
        ids = [f"{call_id}.{i}" for i in range(len(request.requests))]
        queries = [RecommendConverter.to_query(r) for r in request.requests]
        results = await self.recommender.recommend_many(queries, ids, request.partial, record=False)
        failed = [r for r in results if isinstance(r, TailorError)] if request.partial else []
        if failed:  # (without `partial` a failed entry failed the call)
            logger.info("RecommendBatch: %d of %d entries failed, first %s: %s", len(failed),
                        len(results), failed[0].status.name, failed[0].log_message()[:512])
        body = batch_bytes([RecommendConverter.from_error(r, rid).SerializeToString()
                            if isinstance(r, TailorError) else response_bytes(r, rid)
                            for r, rid in zip(results, ids)])
        self.recommender.check_answer(len(body), "requests[].k")  # recorded once it can be sent
        self.recommender.record_many(queries, ids, results, given)
        return body


def _request_id(context) -> tuple[str, bool]:
    """The call's request id (`x-request-id`, also in the trailing metadata), and whether the
    caller gave it (a retry of the call then repeats it) rather than the server drawing it."""
    call = current_call()
    if call is None:
        return "", False
    rid = call.request_id
    return rid, any(k == REQUEST_ID_KEY and v == rid for k, v in context.invocation_metadata() or ())


def _check_size(request, limit: int) -> None:
    size = request.ByteSize()
    if size > limit:
        raise InvalidArgument("request", f"{size} bytes exceeds the configured limit of {limit} bytes")
