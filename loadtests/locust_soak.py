"""`locust_mix.py`'s mix paced for a soak (`python -m loadtests.soak`): each user makes at most
`--rate` calls a second (Locust's `constant_throughput`), so users x rate is the load offered, a
steady share of the machine's capacity rather than its max (`locust_mix.MixUser` calls back to
back). Every option of `locust_mix.py` applies.

    locust -f loadtests/locust_soak.py --headless -u 10 -r 5 -t 30m --rate 20 --host ... [mix options]

The mix module is imported whole, never its class by name: Locust runs every User class a
locustfile's namespace holds, and `MixUser` beside this one ran unpaced too.
"""
from __future__ import annotations

from locust import constant_throughput, events

from loadtests import locust_mix
from loadtests.measure import positive

__all__ = ["PacedMixUser"]


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--rate", type=positive(float), default=20.0,
                        help="calls per second per user, at most (default %(default)s)")


class PacedMixUser(locust_mix.MixUser):
    """`MixUser`, waiting after each call for the rest of its 1 / --rate seconds."""

    def wait_time(self):
        return constant_throughput(self.environment.parsed_options.rate)(self)
