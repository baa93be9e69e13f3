"""`SmtpSender` against a real relay on loopback (aiosmtpd): one connection carries transaction
after transaction, a refused recipient raises its reply's class, and an address SMTP cannot
carry leaves no envelope open on the connection."""
import pytest

from server.messages.errors import Permanent, Transient
from server.messages.smtp import SmtpConfig, SmtpSender

SENDER = "no-reply@tailor.invalid"


def mail(n: int) -> bytes:
    return (f"From: {SENDER}\r\nTo: u{n}@x.example\r\nMessage-ID: <m{n}@t.example>\r\n"
            f"Subject: n{n}\r\n\r\nbody {n}\r\n").encode()


@pytest.fixture
async def sender(sink):
    smtp = SmtpSender(SmtpConfig("127.0.0.1", sink.controller.port, "none", timeout=5))
    yield smtp
    await smtp.close()


async def test_transactions_share_one_connection_and_arrive_whole(sink, sender):
    for n in range(3):
        await sender.send_bytes(SENDER, f"u{n}@x.example", mail(n))
    client = sender._client
    await sender.send_bytes(SENDER, "u3@x.example", mail(3))
    assert sender._client is client  # reused, not reconnected
    assert [r for _, r, _ in sink.arrived] == [[f"u{n}@x.example"] for n in range(4)]
    assert sink.message_ids == [f"<m{n}@t.example>" for n in range(4)]
    assert sink.raw[2] == mail(2)


async def test_refused_recipients_raise_by_their_reply_code(sink, sender):
    sink.rcpt_replies["gone@x.example"] = ["550 5.1.1 no such user"]
    sink.rcpt_replies["later@x.example"] = ["451 4.7.1 try later"]
    with pytest.raises(Permanent, match="smtp 550"):
        await sender.send_bytes(SENDER, "gone@x.example", mail(0))
    with pytest.raises(Transient, match="smtp 451"):
        await sender.send_bytes(SENDER, "later@x.example", mail(1))
    await sender.send_bytes(SENDER, "u2@x.example", mail(2))
    assert sink.message_ids == ["<m2@t.example>"]


@pytest.mark.parametrize("reply, bounced", [
    ("550 5.1.1 no such user", True), ("550 5.1.10 null MX", True), ("553 5.1.3 bad syntax", True),
    ("551 5.1.6 moved", True), ("554 5.7.1 rejected by policy", False),
    ("552 5.2.2 mailbox full", False), ("550 no such user", False),  # no enhanced code: unsure
    ("550 5.1.11 x", False)])
async def test_a_refusal_is_a_hard_bounce_only_when_the_address_takes_no_mail(
        sink, sender, reply, bounced):
    sink.rcpt_replies["r@x.example"] = [reply]
    with pytest.raises(Permanent) as err:
        await sender.send_bytes(SENDER, "r@x.example", mail(0))
    assert err.value.bounced is bounced


@pytest.mark.parametrize("bad", ["a b@x.example", "zoë@x.example"])  # a space; not ASCII
async def test_an_address_smtp_cannot_carry_leaves_the_connection_clean(sink, sender, bad):
    await sender.send_bytes(SENDER, "u0@x.example", mail(0))
    with pytest.raises(Permanent, match="smtp bad address"):  # no retry; a dead letter
        await sender.send_bytes(SENDER, bad, mail(1))
    await sender.send_bytes(SENDER, "u2@x.example", mail(2))  # no "nested MAIL" refusal
    assert [r for _, r, _ in sink.arrived] == [["u0@x.example"], ["u2@x.example"]]


async def test_a_send_cancelled_mid_transaction_leaves_no_session_for_the_next(sink, sender):
    """A ComposeMessage whose caller gave up (its deadline) while the relay had not answered
    DATA yet was cancelled inside the transaction, and the shared connection was kept: the next
    message read the stale replies (MAIL got DATA's 250, DATA got RCPT's) and failed
    (`smtp SMTPDataError`; with one attempt, a dead letter). A cancelled send drops the
    session."""
    import asyncio
    sink.delay_data = 1.0
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sender.send_bytes(SENDER, "u0@x.example", mail(0)), 0.3)
    sink.delay_data = 0.0
    await sender.send_bytes(SENDER, "u1@x.example", mail(1))
    assert sink.message_ids == ["<m0@t.example>", "<m1@t.example>"]  # m0 arrived all the same
