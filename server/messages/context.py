"""The template context of one message: who it is for and what it may show.

    profile            the user's attributes ({} for a user without a profile)
    first_name, ...    `templates.ATTRIBUTE_NAMES`, by bare name where the user has them
    interests          category names, strongest first, from the profile's decayed affinities
    content            the variant's content (every key, templates included, as written)
    campaign           {"id", "name", "channel", "variant_id"}
    channel            the channel the message goes out on
    unsubscribe_url    the one-click unsubscribe link ("" in previews without a user)
    recommend(k=4, category=None)
                       items picked for the user by the Recommend pipeline (seen items and
                       earlier calls' items excluded): dicts with item_id, title, url, price,
                       image, category

The answers are not logged as impressions here: `build(shown=...)` collects them, and the
composer logs them once its message stands (`Composer.record_shown`); a preview logs none.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..interfaces import ProfileReader, Recommendations
from ..limits import Limits
from ..recommend import RecQuery
from .sandbox import OverRenderBudget, waiting
from .templates import ATTRIBUTE_NAMES

__all__ = ["Recipient", "MessageContext", "read_recipient"]

INTERESTS = 3
"""How many categories `interests` lists at most."""


@dataclass(frozen=True)
class Recipient:
    """What the context needs of one user (`attributes` hold PII: never log them)."""

    user_id: str
    attributes: Mapping[str, str]
    interests: tuple[str, ...]


async def read_recipient(profiles: ProfileReader, user_id: str, read: tuple | None = None
                         ) -> Recipient:
    """The user's attributes and interests (one LMDB read snapshot, µs: on the loop), or from
    `read`, the (feature state, meta, ...) already read; an unknown user has neither."""
    found = (profiles.attributes_and_interests(user_id, INTERESTS) if read is None
             else profiles.recipient_of(read[0], read[1], INTERESTS))
    return Recipient(user_id, *found) if found is not None else Recipient(user_id, {}, ())


class MessageContext:
    """Builds the mapping a template renders with; `recommend` calls run the pipeline."""

    def __init__(self, recommender: Recommendations, limits: Limits):
        self.recommender = recommender
        self.limits = limits

    def build(self, recipient: Recipient, *, channel: str, campaign, variant,
              unsubscribe_url: str = "", rec_user: str | None = None, on_loop: bool = False,
              read: tuple | None = None, shown: list | None = None) -> dict:
        """`rec_user`: whose recommendations (default the recipient; previews of a sample
        profile pass an id no profile has, which gets the popular items); `on_loop`: computed
        on the event loop (`Recommender.recommend`); `read`: the recipient's (feature state,
        meta, live seen-set, the recommender's `since()` before that read) as the message's
        decision read them, which recommendations computed on the loop use instead of reading
        the profile again; `shown`: where each
        `recommend()` call's (query, answer, time asked) is appended (None: nowhere)."""
        ctx = {name: recipient.attributes[name] for name in ATTRIBUTE_NAMES
               if name in recipient.attributes}
        ctx.update(profile=dict(recipient.attributes), interests=list(recipient.interests),
                   content=dict(variant.content) if variant else {}, channel=channel,
                   campaign={"id": campaign.campaign_id, "name": campaign.name,
                             "channel": campaign.channel, "variant_id": variant.id if variant else ""},
                   unsubscribe_url=unsubscribe_url,
                   recommend=self._helper(rec_user or recipient.user_id, channel, on_loop,
                                          (recipient.user_id, read[0], read[2], read[3])
                                          if read and on_loop and not rec_user else None,
                                          shown))
        return ctx

    def _helper(self, user_id: str, channel: str, on_loop: bool, read: tuple | None,
                answers: list | None):
        shown: list[str] = []  # items of earlier calls in this message are not repeated
        calls = [0]

        async def recommend(k: int = 4, category: str | None = None) -> list[dict]:
            calls[0] += 1  # each runs the pipeline: a thousand loop steps' worth
            if calls[0] > self.limits.message_recommend_calls:
                raise OverRenderBudget(f"more than {self.limits.message_recommend_calls} "
                                       "recommend() calls (limits.message_recommend_calls)")
            if not isinstance(k, int) or not 1 <= k <= self.limits.message_recommend_k:
                raise InvalidArgument("recommend(k)", f"k must be an int in [1, "
                                      f"{self.limits.message_recommend_k}]")
            query = RecQuery(user_id=user_id, k=k, channel=channel,
                             categories=(category,) if category else (),
                             exclude_item_ids=tuple(shown))
            asked = time.time()  # the impression's time: before the profile is read
            with waiting():  # the pipeline's time is not the render's (its own bounds)
                result = await self.recommender.recommend(query, on_loop=on_loop, read=read,
                                                          record=False)
            if answers is not None:
                answers.append((query, result, asked))
            items = _items(result)
            shown.extend(i["item_id"] for i in items)
            return items
        return recommend


def _items(result) -> list[dict]:
    """The result's rows as the dicts templates see (image "" when the bundle has none)."""
    items, rows = result.bundle.items, result.rows
    images = items["images"][rows].tolist() if "images" in items else [""] * len(rows)
    return [{"item_id": i, "title": t, "url": u, "price": round(p, 2), "image": im, "category": c}
            for i, t, u, p, im, c in zip(
                items["item_ids"][rows].tolist(), items["titles"][rows].tolist(),
                items["urls"][rows].tolist(), items["price"][rows].tolist(), images,
                items["category_names"][items["category"][rows]].tolist())]
