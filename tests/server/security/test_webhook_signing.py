"""The replay memory of the signed webhooks (`server.http.signing`): bounded, forgets the stale."""
from server.http.signing import SeenSignatures


def test_a_signature_is_refused_until_it_goes_stale():
    seen = SeenSignatures(most=10)
    assert seen.first_time("a", until=100.0, now=0.0)
    assert not seen.first_time("a", until=100.0, now=50.0)
    assert seen.first_time("a", until=200.0, now=100.0)  # stale by then: the timestamp refuses it


def test_the_memory_holds_at_most_its_bound():
    seen = SeenSignatures(most=3)
    for n in range(1000):
        assert seen.first_time(str(n), until=1e9, now=0.0)
    assert len(seen._until) == 3
    assert not seen.first_time("999", until=1e9, now=0.0)
