"""A composed email as its wire bytes, without the `email` package's generator.

`smtp.build_email(...).as_bytes(policy=WIRE)` is the reference: a multipart/alternative
message (text, then HTML) with the composed headers, CRLF lines, headers folded only past RFC
5322's 998 characters, the subject an RFC 2047 encoded word, the parts quoted-printable UTF-8.
Building and flattening that object tree costs about 0.7 ms a message (header folding, a regex
compiled for each new boundary), most of SendCampaign's CPU per email. `email_bytes` writes the
same bytes from a fixed layout, encoding the parts with the same functions
(`email.quoprimime`), in about a tenth of that; `tests/server/messages/test_wire.py` checks it
byte for byte against the reference.

The layout holds for the usual message only: every header value printable ASCII words with
single spaces and no line past 998 characters, a one-line subject whose encoded word fits a
line. Anything else (a non-ASCII display name, a header that would fold, a multi-line subject)
goes through the reference (`build_email`), so the output never differs.
"""
from __future__ import annotations

import random
import re
import sys
import time
from email.policy import compat32
from email.quoprimime import body_encode, header_encode
from email.utils import formatdate
from functools import lru_cache

from .smtp import build_email, with_preheader

__all__ = ["email_bytes", "WIRE"]

WIRE = compat32.clone(linesep="\r\n", max_line_length=998)
"""CRLF lines; headers folded only past RFC 5322's hard limit (a List-Unsubscribe link folded
at 78 would come back with a leading space from some parsers)."""
_PLAIN_VALUE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*\Z")
"""A header value the reference writes as it is (no encoding, nothing to fold)."""
_LINE = 998
_PART = ('Content-Type: text/{}; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
         "Content-Transfer-Encoding: quoted-printable\r\n\r\n")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_BOUNDARY_WIDTH = len(repr(sys.maxsize - 1))


@lru_cache(maxsize=4)
def _date(second: int) -> str:
    """The Date header's value for a second (RFC 5322, UTC as -0000): one format a second."""
    return formatdate(second, localtime=False)


def _boundary(parts: str) -> str:
    """A random boundary absent from the parts (as `email.generator.Generator` makes one)."""
    while True:
        token = random.randrange(sys.maxsize)
        boundary = "=" * 15 + f"{token:0{_BOUNDARY_WIDTH}d}" + "=="
        if "--" + boundary not in parts:
            return boundary


def _header(name: str, value: str) -> str | None:
    """`Name: value` CRLF as the reference writes it, or None when the reference would encode
    or fold it."""
    if len(name) + 2 + len(value) > _LINE or not _PLAIN_VALUE.match(value):
        return None
    return f"{name}: {value}\r\n"


def _subject(subject: str) -> str | None:
    """The subject's encoded word, or None when it would not be one line of one word."""
    if not subject or subject.splitlines() != [subject]:
        return None
    word = header_encode(subject.encode("utf-8"), "utf-8")
    return None if len(word) > _LINE - len("Subject: ") - 8 else f"Subject: {word}\r\n"


def _part(subtype: str, text: str) -> str:
    """A quoted-printable UTF-8 part with its headers, CRLF lines."""
    body = body_encode(text.encode("utf-8").decode("latin-1")) if text else ""
    return _PART.format(subtype) + _NEWLINE.sub("\r\n", body)


def _headers(message, to: str, sender: str, date: str) -> str | None:
    lines = [_header("From", sender), _header("To", to), _subject(message.parts.get("subject", "")),
             _header("Date", date)]
    lines += [_header(name, value) for name, value in message.headers.items()]
    return None if None in lines else "".join(lines)


def email_bytes(message, to: str, sender: str, *, date: str | None = None,
                boundary: str | None = None) -> bytes:
    """The flattened email of a composed `message` to `to` (what the reference writes).
    `date` (RFC 5322, default now) and `boundary` (default random) are for tests."""
    date = date or _date(int(time.time()))
    headers = _headers(message, to, sender, date)
    if headers is None:
        mail = build_email(message, to, sender, date=date)
        if boundary is not None:
            mail.set_boundary(boundary)
        return mail.as_bytes(policy=WIRE)
    parts = [_part("plain", message.parts.get("text", ""))]
    if message.parts.get("html"):
        parts.append(_part("html", with_preheader(message.parts["html"],
                                                  message.parts.get("preheader", ""))))
    boundary = boundary or _boundary("".join(parts))
    out = [f'Content-Type: multipart/alternative; boundary="{boundary}"\r\nMIME-Version: 1.0\r\n',
           headers]
    for part in parts:
        out += ["\r\n--", boundary, "\r\n", part]
    out += ["\r\n--", boundary, "--\r\n"]
    return "".join(out).encode("ascii")
