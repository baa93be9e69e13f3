"""A real HTTP server on loopback standing in for an SMS / push provider (aiohttp): it keeps every
request and answers with the statuses it is told, in order (the last one repeats)."""
from __future__ import annotations

import asyncio
import json

from aiohttp import web

from tests.conftest import free_port


class Provider:
    def __init__(self):
        self.port = free_port()
        self.requests: list[dict] = []
        self.gets: list[str] = []
        """Paths fetched with GET (a client following a 3xx the POST got)."""
        self.statuses: list[int] = [200]
        self.delay = 0.0
        self.refusal_body = "no"
        """The body of a reply that is no 2xx (e.g. a provider's JSON error with its code)."""
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def answer(self, *statuses: int) -> None:
        self.statuses = list(statuses)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"path": request.path, "headers": dict(request.headers),
                              "raw": body, "json": json.loads(body)})
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        moved = {"Location": f"{request.path}/moved"} if 300 <= status < 400 else None
        return web.Response(status=status, text="ok" if status < 300 else self.refusal_body, headers=moved)

    async def _get(self, request: web.Request) -> web.Response:
        self.gets.append(request.path)
        return web.Response(text="a landing page")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{channel}", self._handle)
        app.router.add_get("/{path:.*}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self._runner.cleanup()
