"""The public HTTP endpoint (aiohttp): one-click unsubscribe (RFC 8058), inbound SMS, delivery
reports.

    GET  /u/<token>      a page with one button (a form POSTing the same as a mail client)
    POST /u/<token>      body `List-Unsubscribe=One-Click` (a form, or plain text) or none:
                         opts the user out of the token's channel at once, idempotently; no
                         login, no confirmation step; and every profile messaged on that
                         channel at the address the user was (the address's owner asked:
                         `messages.phones.AddressIndex.sharing`)
    POST /sms/inbound    the SMS provider's webhook (`sms.SmsInbound`)
    POST /delivery/events  the email provider's bounce and complaint reports
                         (`delivery_events.DeliveryEvents`)

Anyone may call it: the token is the credential (`server.messages.unsubscribe`). A token that
does not verify gets 400 and changes nothing, as does a body that is not a form. Every
`TailorError` a handler raises becomes its status here, in one middleware
(`server.errors.http_status`: 400 for bad input, 503 when the store cannot take a write now).
GET never changes anything (link scanners prefetch links). It shares the domain objects of the
gRPC server, never its servicers, and runs in every worker (SO_REUSEPORT), over TLS with the gRPC
port's certificate when TLS is on.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence

from aiohttp import web

from ..errors import InvalidArgument, TailorError, http_status
from ..interfaces import ConsentWriter, ProfileMetas
from ..limits import DEFAULT_LIMITS, Limits
from ..messages.unsubscribe import BadToken, UnsubscribeTokens
from ..profiles.errors import ErasedSince
from ..security.errors import TlsFileInvalid
from ..security.transport import no_passphrase
from ..security.userref import user_ref
from .bounds import CappedRunner, within
from .pages import SECURITY_HEADERS, bad_token_page, confirm_page, done_page

__all__ = ["PublicHttp", "ONE_CLICK"]

logger = logging.getLogger("tailor.http")

ONE_CLICK = "One-Click"


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers=SECURITY_HEADERS)


@web.middleware
async def _errors(request: web.Request, handler):
    """A `TailorError` -> its HTTP status and message (logged without the path: it holds the
    token)."""
    try:
        return await handler(request)
    except TailorError as err:
        status, text = http_status(err)
        route = request.match_info.route.resource
        logger.info("%s %s -> %d: %s", request.method, route.canonical if route else "?", status,
                    err.log_message())
        reply = web.Response(status=status, text=text, headers=SECURITY_HEADERS)
        if request.content.exception() is not None:  # a body that broke off (bad gzip, chunks):
            request.content.feed_eof()  # nothing left to drain (aiohttp would re-raise its
            reply.force_close()         # error while lingering), and the connection is spent
        return reply


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_ONE_CLICK_BODY = f"List-Unsubscribe={ONE_CLICK}".encode()


async def _form(request: web.Request, seconds: float):
    """The request's form fields; InvalidArgument for a body aiohttp cannot parse as one, 408
    for one that takes longer than `seconds` to arrive."""
    try:
        return await within(seconds, request.post())
    except (ValueError, LookupError) as err:  # UnicodeDecodeError; LookupError: unknown charset
        raise InvalidArgument("body", f"not a form ({type(err).__name__})") from None


async def _is_one_click(request: web.Request, seconds: float) -> bool:
    """Whether the POST's body asks the one-click unsubscribe (RFC 8058): a form whose
    `List-Unsubscribe` is `One-Click`, the pair as plain text (a client sending it without a
    form type: text/plain, or no Content-Type), or no body at all (clients seen sending none).
    The POST is what keeps link scanners out (they GET); a body saying anything else is not
    one. A form body aiohttp cannot parse is InvalidArgument (`_form`)."""
    if request.content_type in _FORM_TYPES:  # (multipart is read from the stream: not read())
        form = await _form(request, seconds)
        return form.get("List-Unsubscribe") == ONE_CLICK or not form and \
            not (await within(seconds, request.read())).strip()
    return (await within(seconds, request.read())).strip() in (b"", _ONE_CLICK_BODY)


class PublicHttp:
    """The aiohttp application and its listening site; `start()` binds, `stop()` closes."""

    def __init__(self, tokens: UnsubscribeTokens, consent: ConsentWriter, *, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False,
                 sms=None, delivery_events=None, limits: Limits = DEFAULT_LIMITS,
                 addresses: Sequence = (), metas: ProfileMetas | None = None):
        """`limits`: the `http_*` bounds on clients (`server.http.bounds`); `addresses`: the
        indexes of the addresses messages went to (`messages.phones.AddressIndex`, one per
        channel), `metas` the profiles' meta records: a link opts out every profile messaged
        at its user's address."""
        self.tokens, self.consent, self.limits = tokens, consent, limits
        self.addresses, self.metas = {i.channel: i for i in addresses}, metas
        self.host, self.port, self.ssl_context, self.reuse_port = host, port, ssl_context, reuse_port
        self.app = web.Application(client_max_size=limits.http_body_bytes,
                                   middlewares=[_errors])
        self.app.router.add_get("/u/{token}", self.confirm)
        self.app.router.add_post("/u/{token}", self.unsubscribe)
        if sms is not None:
            self.app.router.add_post("/sms/inbound", sms.handle)
        if delivery_events is not None:
            self.app.router.add_post("/delivery/events", delivery_events.handle)
        self._runner: CappedRunner | None = None

    def _read(self, request: web.Request):
        try:
            return self.tokens.read(request.match_info["token"])
        except BadToken:
            raise web.HTTPBadRequest(text=bad_token_page(), content_type="text/html",
                                     headers=SECURITY_HEADERS) from None

    async def confirm(self, request: web.Request) -> web.Response:
        return _html(confirm_page(self._read(request).channel))

    async def unsubscribe(self, request: web.Request) -> web.Response:
        target = self._read(request)
        if not await _is_one_click(request, self.limits.http_body_seconds):
            raise InvalidArgument("body", "must be List-Unsubscribe=One-Click")
        # cut to the limit: a long campaign id made every click of its links a 400
        source = f"one-click unsubscribe ({target.campaign_id})"[:self.limits.consent_source_chars]
        tokens, users = await self._reached(target.user_id, target.channel)
        for user in users:
            try:  # `existing`: an erased user's old link opts nothing out (and writes nothing)
                await self.consent.set_consent(user, target.channel, False, source,
                                               existing=True)
            except ErasedSince:
                logger.info("unsubscribe link of an erased user (%s): nothing left to opt out",
                            user_ref(user))
                continue
            # %r: a campaign id stored before C1, bidi and format characters were refused in
            # ids may hold one; repr escapes it (as error messages show ids)
            logger.info("unsubscribed %s from %s (campaign %r)", user_ref(user), target.channel,
                        target.campaign_id)
        if tokens:
            done = await self.consent.set_unnamed_consents(
                tokens, target.channel, False, source, self.addresses[target.channel].still_indexed)
            logger.info("unsubscribed %d unnamed profiles from %s (campaign %r)", len(done),
                        target.channel, target.campaign_id)
        return _html(done_page(target.channel))

    async def _reached(self, user_id: str, channel: str) -> tuple[list[bytes], list[str]]:
        """(the profiles indexed by token alone: stored before the index, their id nowhere in
        the store, `AddressIndex.unnamed`; the link's user, then every other profile messaged on
        `channel`) at the address the user was (several profiles may share an inbox or a
        phone: the address's owner clicked). The unnamed are read first: one named in between
        is among the others."""
        index = self.addresses.get(channel)
        if index is None:
            return [], [user_id]

        def read() -> tuple[list[bytes], list[str]]:
            address = index.held_in(self.metas.metas([user_id])[0] if self.metas is not None
                                    else None)
            return index.unnamed(address, user_id), index.sharing(user_id, address)
        tokens, users = await asyncio.to_thread(read)
        return tokens, [user_id, *(u for u in users if u != user_id)]

    async def start(self) -> int:
        """Bind and serve; returns the bound port (0 in the settings picks a free one)."""
        self._runner = CappedRunner(self.app, most=self.limits.http_connections,
                                    idle=self.limits.http_idle_seconds,
                                    linger=self.limits.http_body_seconds,
                                    headers=self.limits.http_headers, tls=self.ssl_context,
                                    access_log=None)
        await self._runner.setup()  # the runner does the TLS handshakes (counted: bounds.py)
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=self.reuse_port or None)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        logger.info("public HTTP%s on %s:%d", "S" if self.ssl_context else "", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def server_ssl_context(tls) -> tuple[ssl.SSLContext | None, Callable[[], None]]:
    """An HTTPS context from the gRPC port's certificate (`ServerTls`) and its SIGHUP reloader;
    no client certificate is asked for (mail providers and browsers call this endpoint).

    A reload builds a new context and switches each new handshake to it (the SNI callback runs
    on every ClientHello, server name or not); one that fails leaves the current one as it
    was. Loading the files into the live context instead dropped its key as soon as a new
    certificate was read, so a certificate copied before its key took the port down."""
    if tls is None:
        return None, lambda: None
    ctx = _context(tls)

    def reload() -> None:
        try:
            fresh = _context(tls)
        except (OSError, ssl.SSLError, TlsFileInvalid) as err:
            logger.error("TLS reload (public HTTP) failed, keeping the current certificate "
                         "(reading %s and %s): %s", tls.cert, tls.key, err)
            return

        def switch(sock, server_name: str | None, current: ssl.SSLContext) -> None:
            sock.context = fresh
        ctx.sni_callback = switch
    return ctx, reload


def _context(tls) -> ssl.SSLContext:
    tls.check()  # the gRPC port's checks (an expired certificate, a key of another), flags named
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # a locked key is refused, never prompted for on the terminal (`no_passphrase`)
    ctx.load_cert_chain(tls.cert, tls.key, password=no_passphrase(tls.key))
    return ctx
