"""tailor.v1.AttributionService."""
from __future__ import annotations

import asyncio

import numpy as np

from kernels.attribution import DAY
from protos.tailor.v1 import attribution_pb2 as pb
from protos.tailor.v1 import attribution_pb2_grpc as pb_grpc

from ..attribution import TOUCH_TYPES, AttributionResult, Attributor, JourneyQuery, ModelSpec, PathSet
from ..errors import InvalidArgument, grpc_errors

__all__ = ["AttributionServicer", "AttributionConverter"]

MODELS = {pb.FIRST_TOUCH: "first", pb.LAST_TOUCH: "last", pb.LAST_NON_DIRECT: "last_non_direct",
          pb.LINEAR: "linear", pb.POSITION_BASED: "position", pb.TIME_DECAY: "time_decay",
          pb.MARKOV: "markov", pb.SHAPLEY: "shapley"}
FORMS = {pb.SHAPLEY_FORM_UNSPECIFIED: "counts", pb.COUNTS: "counts", pb.RATE: "rate",
         pb.ORDERED: "ordered"}
GROUPINGS = {pb.GROUPING_UNSPECIFIED: "channel", pb.CHANNEL: "channel", pb.CAMPAIGN: "campaign"}


def _enum(table: dict, value: int, field: str, enum) -> str:
    if value not in table:
        known = ", ".join(enum.Name(k) for k in table if k)
        raise InvalidArgument(field, f"unknown value {value}; expected one of {known}")
    return table[value]


class AttributionConverter:
    @staticmethod
    def to_spec(msg: pb.ModelSpec) -> ModelSpec:
        shares = (msg.position_first, msg.position_last)
        return ModelSpec(
            model=_enum(MODELS, msg.model, "spec.model", pb.AttributionModel),
            order=msg.order or 1, position_shares=shares if any(shares) else (0.4, 0.4),
            half_life=msg.half_life_seconds or 7 * DAY, direct=msg.direct_channel or "direct",
            shapley_form=_enum(FORMS, msg.shapley_form, "spec.shapley_form", pb.ShapleyForm),
            samples=msg.shapley_samples, seed=msg.seed, transition_matrix=msg.transition_matrix,
            path_credits=msg.path_credits)

    @staticmethod
    def add_paths(paths: PathSet, msg: pb.AttributeRequest) -> None:
        """Append the paths of one request message (CPU work: run it off the event loop)."""
        seqs = []
        for i, p in enumerate(msg.paths):
            if p.channels and p.path:
                raise InvalidArgument(f"paths[{paths.n_paths + i}]", "give channels or path, "
                                      "not both")
            seqs.append([c.strip() for c in p.channels] if p.channels
                        else [c.strip() for c in p.path.split(">")] if p.path.strip() else [])
        paths.add_sequences(seqs, [p.conversions for p in msg.paths],
                            [p.value for p in msg.paths], [p.nulls for p in msg.paths],
                            [list(p.timestamps) for p in msg.paths])
        paths.add_rows(list(msg.channelattribution_rows))

    @staticmethod
    def to_query(msg: pb.AttributeStoredRequest) -> JourneyQuery:
        return JourneyQuery(start=float(msg.start_time), end=float(msg.end_time),
                            lookback=float(msg.lookback_seconds or 30 * DAY),
                            by=_enum(GROUPINGS, msg.group_by, "group_by", pb.Grouping),
                            touch_types=frozenset(msg.touch_types or TOUCH_TYPES),
                            nulls=not msg.exclude_nulls)

    @staticmethod
    def from_result(res: AttributionResult, model: int) -> pb.AttributeResponse:
        out = pb.AttributeResponse(model=model,
                                   unattributed_conversions=res.unattributed_conversions,
                                   unattributed_value=res.unattributed_value)
        paths, cr = res.paths, res.credits
        if cr is None:
            return out
        out.paths = paths.n_paths
        out.total_conversions = float(paths.conversions.sum())
        out.total_value = float(paths.value.sum())
        d = cr.details
        for i, name in enumerate(cr.channels):
            c = out.credits.add(channel=name, conversions=cr.conversions[i], value=cr.value[i])
            if "removal_effects" in d:
                c.removal_effect = d["removal_effects"][i]
                c.value_removal_effect = d["value_removal_effects"][i]
            if "stderr" in d:
                c.stderr, c.value_stderr = d["stderr"][i], d["value_stderr"][i]
            if "rank_conversions" in d:
                c.rank_conversions.extend(d["rank_conversions"][i].tolist())
                c.rank_value.extend(d["rank_value"][i].tolist())
        out.conversion_probability = d.get("conversion_probability", 0.0)
        out.shapley_samples = d.get("samples", 0)
        if "transition_matrix" in d:
            AttributionConverter._matrix(out.transition_matrix, d["states"], d["transition_matrix"])
        if cr.touch_share is not None:
            AttributionConverter._path_credits(out, paths, cr.touch_share, res.stored)
        return out

    @staticmethod
    def _matrix(out: pb.TransitionMatrix, states, matrix) -> None:
        coo = matrix.tocoo()
        out.states.extend(states)
        out.row.extend(coo.row.tolist())
        out.col.extend(coo.col.tolist())
        out.probability.extend(coo.data.tolist())

    @staticmethod
    def _path_credits(out: pb.AttributeResponse, paths, share: np.ndarray, stored: bool) -> None:
        row = np.repeat(np.arange(paths.n_paths), paths.lengths)
        conv, value = (share * paths.conversions[row]).tolist(), (share * paths.value[row]).tolist()
        ptr = paths.indptr.tolist()
        for p in range(paths.n_paths):
            out.path_credits.add(path_index=p, touch_conversions=conv[ptr[p]:ptr[p + 1]],
                                 touch_value=value[ptr[p]:ptr[p + 1]])
        if stored:
            ts = paths.timestamps.tolist() if paths.timestamps is not None else None
            for p in range(paths.n_paths):
                out.stored_paths.add(channels=paths.path(p), conversions=paths.conversions[p],
                                     value=paths.value[p], nulls=paths.nulls[p],
                                     timestamps=ts[ptr[p]:ptr[p + 1]] if ts else ())


class AttributionServicer(pb_grpc.AttributionServiceServicer):
    def __init__(self, attributor: Attributor):
        self.attributor = attributor

    async def _respond(self, res: AttributionResult, model: int) -> pb.AttributeResponse:
        return await asyncio.to_thread(AttributionConverter.from_result, res, model)

    @grpc_errors
    async def Attribute(self, request: pb.AttributeRequest, context) -> pb.AttributeResponse:
        spec = AttributionConverter.to_spec(request.spec)
        paths = self.attributor.path_set()
        await asyncio.to_thread(AttributionConverter.add_paths, paths, request)
        res = await self.attributor.attribute(spec, paths, context.time_remaining())
        return await self._respond(res, request.spec.model)

    @grpc_errors
    async def AttributeStream(self, request_iterator, context) -> pb.AttributeResponse:
        spec, model, paths = None, 0, self.attributor.path_set()
        async for request in request_iterator:
            if spec is None:
                spec, model = AttributionConverter.to_spec(request.spec), request.spec.model
                spec.check()  # fail before the upload, not after
            await asyncio.to_thread(AttributionConverter.add_paths, paths, request)
        if spec is None:
            raise InvalidArgument("paths", "no paths given (empty stream)")
        res = await self.attributor.attribute(spec, paths, context.time_remaining())
        return await self._respond(res, model)

    @grpc_errors
    async def AttributeStored(self, request: pb.AttributeStoredRequest,
                              context) -> pb.AttributeResponse:
        spec = AttributionConverter.to_spec(request.spec)
        res = await self.attributor.attribute_stored(spec, AttributionConverter.to_query(request),
                                                     context.time_remaining())
        return await self._respond(res, request.spec.model)
