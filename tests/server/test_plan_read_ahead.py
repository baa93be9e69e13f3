"""PlanCampaign's read-ahead (`limits.plan_read_ahead_users`): users decided but not yet
answered stay within the bound; a batch larger than the bound is read alone. A message decided
in slices (`DECIDE_SLICE`) joins back into one batch, in order."""
import asyncio

from server.campaigns.plan import _ReadAhead


async def _taken(ahead: _ReadAhead, n: int) -> bool:
    """Whether `take(n)` gets through within a few loop turns (the task is cancelled if not)."""
    task = asyncio.ensure_future(ahead.take(n))
    for _ in range(5):
        await asyncio.sleep(0)
    if task.done():
        return True
    task.cancel()
    return False


async def test_batches_are_read_ahead_up_to_the_bound_and_wait_for_answers():
    ahead = _ReadAhead(1000)
    assert await _taken(ahead, 400) and await _taken(ahead, 400)
    blocked = asyncio.ensure_future(ahead.take(400))  # 1,200 would pass the bound
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done() and ahead.held == 800
    ahead.release(400)  # the first batch answered
    await asyncio.wait_for(blocked, 1)
    assert ahead.held == 800


async def test_a_batch_larger_than_the_bound_goes_alone():
    ahead = _ReadAhead(100)
    assert await _taken(ahead, 10)
    assert not await _taken(ahead, 500)  # something is held: it waits
    assert ahead.held == 10
    ahead.release(10)
    assert await _taken(ahead, 500)  # nothing held: read alone
    assert not await _taken(ahead, 1)
    ahead.release(500)
    assert await _taken(ahead, 1)


def test_batches_decided_in_slices_join_in_order():
    from server.campaigns.plan import PlanBatch
    a = PlanBatch(["u0", "u1"], ["d0", "d1"], [1, -1], [0.5, 0.0], ["v1", ""], ["email"] * 2,
                  [0.0, 0.0], ["", "no_consent"])
    b = PlanBatch(["u2"], ["d2"], [0], [0.25], ["v0"], ["sms"], [60.0], [""],
                  channel_propensities=[0.75])
    joined = PlanBatch.concat([a, b])
    assert joined.user_ids == ["u0", "u1", "u2"] and joined.arms == [1, -1, 0]
    assert joined.reasons == ["", "no_consent", ""] and joined.send_at == [0.0, 0.0, 60.0]
    assert joined.channel_propensities == [1.0, 1.0, 0.75]  # a lacked them: 1 each
    assert joined.send_at_propensities is None
    assert PlanBatch.concat([a]) is a
