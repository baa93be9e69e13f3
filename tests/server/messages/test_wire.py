"""`wire.email_bytes` writes byte for byte what the `email` package writes for the same message
(`smtp.build_email(...).as_bytes(policy=WIRE)`), on its fast layout and on the fallback."""
import random
from email import message_from_bytes, policy

import pytest

from server.messages.compose import Message
from server.messages.smtp import build_email
from server.messages.wire import WIRE, _headers, email_bytes

DATE, BOUNDARY = "Wed, 02 Dec 2026 05:00:00 -0000", "===============0123456789012345678=="
SENDER = "Tailor <no-reply@tailor.invalid>"
PIECES = ["Hi", "Name1", " ", "  ", "\t", ",", ";", "=", "=?", "?=", "é", "日本", "🙂", "\n", "\r\n",
          "\r", "\u2028", ".", "From ", "--" + BOUNDARY, "x" * 90, "<b>&amp;</b>", "=3D", " \n"]


def message(subject: str, text: str, html: str = "", preheader: str = "",
            unsubscribe: str = "<https://t.example/u/abc>") -> Message:
    parts = {"subject": subject, "text": text}
    if html:
        parts.update(html=html, preheader=preheader)
    return Message("c", "email", "dec-1", parts=parts, headers={
        "List-Unsubscribe": unsubscribe, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Message-ID": "<dec-1@tailor.invalid>"})


def reference(msg: Message, to: str, sender: str = SENDER) -> bytes:
    mail = build_email(msg, to, sender, date=DATE)
    mail.set_boundary(BOUNDARY)
    return mail.as_bytes(policy=WIRE)


def fast(msg: Message, to: str, sender: str = SENDER) -> bytes:
    return email_bytes(msg, to, sender, date=DATE, boundary=BOUNDARY)


def test_the_usual_message_takes_the_fast_layout_and_matches_the_reference():
    msg = message("Hi Näme1, new for you", "Hi Name1: https://t.example/u/abc\n",
                  "<html><body><p>Hi Name1,</p>" + "x" * 200 + "</body></html>", "Picked")
    assert _headers(msg, "u@x.example", SENDER, DATE) is not None
    assert fast(msg, "u@x.example") == reference(msg, "u@x.example")


@pytest.mark.parametrize("case", [
    dict(subject=""),                                    # no subject
    dict(subject="a\nb"),                                # a multi-line subject
    dict(subject="é" * 400),                             # an encoded word past a line
    dict(to="Zoë <z@x.example>"),                        # a non-ASCII display name
    dict(to=" u@x.example"),                             # leading space
    dict(sender="Tailör <no-reply@tailor.invalid>"),
    dict(unsubscribe="<https://t.example/u/" + "A" * 1000 + ">"),  # would fold
    dict(unsubscribe="<https://t.example/u/a>,  <mailto:u@t.example>"),
])
def test_what_the_fast_layout_cannot_write_goes_through_the_reference(case):
    to, sender = case.pop("to", "u@x.example"), case.pop("sender", SENDER)
    msg = message(**{"subject": "Hi", "text": "t", "html": "<p>h</p>", **case})
    assert fast(msg, to, sender) == reference(msg, to, sender)


def test_random_parts_match_the_reference():
    rng = random.Random(16)

    def text(n):
        return "".join(rng.choice(PIECES) for _ in range(rng.randrange(n)))
    laid_out = 0
    for _ in range(300):
        msg = message(text(8), text(40), text(40), text(4),
                      f"<https://t.example/u/{text(3).strip()}>")
        to = rng.choice(["u@x.example", "U <u@x.example>", "u@x.example, v@x.example"])
        assert fast(msg, to) == reference(msg, to), msg
        laid_out += _headers(msg, to, SENDER, DATE) is not None
    assert laid_out > 30  # the fast layout was compared too, not only the fallback


def test_a_random_boundary_is_absent_from_the_parts_and_the_mail_parses():
    msg = message("Hi é", "plain\n", "<p>html</p>")
    raw = email_bytes(msg, "u@x.example", SENDER)
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["Subject"] == "Hi é" and mail["Message-ID"] == "<dec-1@tailor.invalid>"
    assert [p.get_content() for p in mail.iter_parts()] == ["plain\r\n", "<p>html</p>"]
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
