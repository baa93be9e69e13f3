"""The public endpoint's HTML: small, self-contained pages (no script, no external resource)."""
from __future__ import annotations

from html import escape

__all__ = ["confirm_page", "done_page", "bad_token_page", "SECURITY_HEADERS"]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;"
          "color:#222}h1{font-size:1.4rem}button{font-size:1rem;padding:.6rem 1.2rem;border:0;"
          "border-radius:.3rem;background:#1a56db;color:#fff;cursor:pointer}")

_CHANNEL_NAMES = {"email": "emails", "sms": "text messages", "push": "push notifications"}


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1>{body}</body></html>")


def confirm_page(channel: str) -> str:
    """One button: a form POSTing `List-Unsubscribe=One-Click` to the same URL (RFC 8058)."""
    what = escape(_CHANNEL_NAMES.get(channel, "messages"))
    return _page("Unsubscribe", f"<p>Stop receiving marketing {what} from us?</p>"
                 '<form method="post"><input type="hidden" name="List-Unsubscribe" '
                 'value="One-Click"><button type="submit">Unsubscribe</button></form>')


def done_page(channel: str) -> str:
    what = escape(_CHANNEL_NAMES.get(channel, "messages"))
    return _page("You are unsubscribed", f"<p>You will receive no more marketing {what} from "
                 "us. Service messages about your orders still reach you.</p>")


def bad_token_page() -> str:
    return _page("Link not valid", "<p>This unsubscribe link is not valid. Please use the "
                 "link of a message you received.</p>")
