"""SMS segment counting (GSM-7 basic + extension tables, UCS-2) and channel limits."""
import grpc
import pytest

from server.limits import Limits
from server.messages.channels import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    check_parts,
    json_bytes,
    sms_length,
)
from server.messages.errors import OverChannelLimit


def test_the_gsm7_tables_have_their_3gpp_sizes():
    assert len(GSM7_BASIC) == 127  # 128 codes, 0x1B being the escape
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize("text, encoding, units, segments", [
    ("", "gsm7", 0, 0),
    ("a" * 160, "gsm7", 160, 1),
    ("a" * 161, "gsm7", 161, 2),           # 153 + 8
    ("a" * 306, "gsm7", 306, 2),           # 2 x 153
    ("a" * 307, "gsm7", 307, 3),
    ("€" * 80, "gsm7", 160, 1),            # extension: two septets each
    ("€" * 81, "gsm7", 162, 2),
    ("a" * 152 + "€" + "a" * 10, "gsm7", 164, 2),  # the pair fits: 154 > 153, so it moves on
    ("Grüße!", "gsm7", 6, 1),              # ü is in the basic table, ß too
    ("ç" + "a" * 69, "ucs2", 70, 1),       # ç (lower case) is not GSM-7: the whole text is UCS-2
    ("ç" + "a" * 70, "ucs2", 71, 2),
    ("é" * 160, "gsm7", 160, 1),
    ("😀" * 35, "ucs2", 70, 1),             # a surrogate pair is two UTF-16 units
    ("😀" * 34 + "a", "ucs2", 69, 1),
    ("a" + "😀" * 34, "ucs2", 69, 1),
    ("a" * 66 + "😀" + "a" * 5, "ucs2", 73, 2),
    ("ç" * 134, "ucs2", 134, 2),
    ("ç" * 135, "ucs2", 135, 3),
])
def test_sms_length(text, encoding, units, segments):
    got = sms_length(text)
    assert (got.encoding, got.units, got.segments) == (encoding, units, segments)


def test_an_escape_pair_is_never_split_between_segments():
    # 152 septets then an extension char: 154 > 153, so the pair opens segment 2 (2 + 151 = 153),
    # and the last "a" a third one
    text = "a" * 152 + "[" + "a" * 152
    assert sms_length(text).units == 306
    assert sms_length(text).segments == 3  # naive ceil(306 / 153) would say 2


def test_limits_refuse_long_sms_and_push_and_report_segments():
    lim = Limits(sms_segments=2, push_title_chars=5, push_body_chars=10)
    assert check_parts("v", "sms", {"text": "a" * 306}, lim)["sms_segments"] == 2
    with pytest.raises(OverChannelLimit, match="3 SMS segments"):
        check_parts("v", "sms", {"text": "a" * 307}, lim)
    check_parts("v", "push", {"title": "12345", "body": "x" * 10}, lim)
    with pytest.raises(OverChannelLimit, match="'title': 6 characters"):
        check_parts("v", "push", {"title": "123456"}, lim)
    with pytest.raises(OverChannelLimit, match="bytes rendered"):
        check_parts("v", "email", {"html": "x" * 300}, Limits(message_part_bytes=299))


@pytest.mark.parametrize("channel, channels, expected", [
    ("email", (), ("email",)),
    ("email", ("email", "push"), ("email", "push")),  # `channel` is one of `channels`: once
    ("push", ("web", "push", "sms"), ("push", "sms")),  # a placement carries no message
    ("web", ("web", "app"), ()),
])
def test_a_campaigns_message_channels_are_its_message_carrying_ones_once_in_order(
        channel, channels, expected):
    """Each caller filtered out the placements itself (and met `channel` twice)."""
    from server.campaigns.spec import CampaignSpec
    assert CampaignSpec("c", channel=channel, channels=channels).message_channels == expected


def test_a_push_payload_is_bounded_by_its_encoded_bytes_not_its_characters():
    # the title and body limits counted characters only: 997 emoji (4 UTF-8 bytes each) under
    # a 1000-character title limit made a 4000-byte payload, and one more byte was let through
    # to a provider that counts bytes (APNs refuses a payload over 4096)
    lim = Limits(push_title_chars=1000, push_payload_bytes=4000)
    title = "\U0001F600" * 997                  # {"title":"..."}: 12 + 3988 = 4000 bytes
    check_parts("v", "push", {"title": title}, lim)
    with pytest.raises(OverChannelLimit) as err:
        check_parts("v", "push", {"title": title + "a"}, lim)
    assert str(err.value) == ("variant 'v', part 'title': the push payload takes 4001 bytes "
                              "encoded (title 3989), at most 4000 (push_payload_bytes: the "
                              "provider counts bytes, not characters)")
    assert err.value.status == grpc.StatusCode.FAILED_PRECONDITION


def test_the_push_payload_counts_every_part_as_the_webhook_sends_it():
    # defaults: a 65-character title and 240-character body pass their character limits; the
    # url, and the quotes escaped in the body, take the payload past push_payload_bytes
    lim = Limits()
    parts = {"title": "\u00e9" * 65, "body": '"' * 240, "url": "https://x.example/"}
    sent = json_bytes(parts)
    assert len(sent) == 10 + 130 + 10 + 480 + 9 + len(parts["url"]) + 2  # '"' is 2 bytes: \"
    parts["url"] += "a" * (lim.push_payload_bytes - len(sent))
    check_parts("v", "push", parts, lim)
    parts["url"] += "a"
    with pytest.raises(OverChannelLimit, match=r"part 'url': the push payload takes 4001 bytes "
                                               r"encoded \(title 130, body 480, url 3360\)"):
        check_parts("v", "push", parts, lim)
