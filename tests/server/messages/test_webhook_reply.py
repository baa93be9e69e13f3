"""The provider's reply body is read only up to `Limits.webhook_reply_bytes`: a 2xx whose body
is endless (a misconfigured URL, a provider streaming a page) counts as accepted at once, instead
of filling memory until the timeout and being retried (the message sent again)."""
import asyncio
import time

from aiohttp import web

from server.messages.webhook import WebhookSender
from server.security.secrets import Keyring
from tests.conftest import free_port


async def test_an_endless_reply_body_after_a_200_is_accepted_without_reading_it_all():
    sent = []

    async def endless(request: web.Request) -> web.StreamResponse:
        sent.append(await request.read())
        reply = web.StreamResponse(status=200)
        await reply.prepare(request)
        for _ in range(64):  # 64 MiB, then a stall: the body never ends
            await reply.write(b"x" * (1 << 20))
        await asyncio.sleep(30)
        return reply
    app = web.Application()
    app.router.add_post("/sms", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sender = WebhookSender({"sms": f"http://127.0.0.1:{port}/sms"},
                           Keyring.generate("delivery-webhook"), timeout=5.0)
    try:
        started = time.monotonic()
        await sender.post("sms", b'{"id":"d1"}')  # accepted: no Transient, so no resend
        assert time.monotonic() - started < 3.0
        assert sent == [b'{"id":"d1"}']
    finally:
        await sender.close()
        await runner.cleanup()
