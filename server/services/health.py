"""grpc.health.v1.Health: grpc's asyncio servicer (Check, Watch), with List answered.

grpc's asyncio servicer has no List (the sync one does): the generated base raised
NotImplementedError, so every call, anyone's (health is open), was logged at ERROR with its
traceback. List is answered UNIMPLEMENTED instead: it would name every service to anyone, which
reflection tells only an authenticated caller (`security.roles.REFLECTION`)."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health

__all__ = ["HealthServicer"]


class HealthServicer(health.aio.HealthServicer):
    async def List(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Health/List is not served: ask "
                            "Health/Check (or Watch) about a service by its name")
