"""`python -m clients COMMAND --server HOST:PORT ...` — every command prints JSON."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .client import TailorClient, TailorError


def _recommend(client: TailorClient, args) -> dict:
    recs = client.recommend(args.user, args.k, channel=args.channel, categories=args.category or (),
                            exclude=args.exclude or ())
    return dataclasses.asdict(recs)


COMMANDS = {
    "recommend": _recommend,
    "status": lambda client, args: client.model_status(),
    "rollback": lambda client, args: client.rollback(args.version),
    "ping": lambda client, args: client.ping() or {"ok": True},
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default="127.0.0.1:50051", help="host:port (default %(default)s)")
    common.add_argument("--timeout", type=float, default=5.0, help="deadline per call, seconds")
    parser = argparse.ArgumentParser(prog="python -m clients", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("recommend", parents=[common], help="top-k items for a user")
    rec.add_argument("--user", required=True)
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--channel", default="")
    rec.add_argument("--category", action="append", help="only this category (repeatable)")
    rec.add_argument("--exclude", action="append", help="never this item id (repeatable)")
    sub.add_parser("status", parents=[common], help="what the server has loaded")
    rb = sub.add_parser("rollback", parents=[common], help="serve the previous bundle version (or --version)")
    rb.add_argument("--version", default="")
    sub.add_parser("ping", parents=[common], help="an empty RPC")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with TailorClient(args.server, timeout=args.timeout) as client:
        try:
            out = COMMANDS[args.command](client, args)
        except TailorError as err:
            print(json.dumps({"error": err.code.name, "message": str(err)}), file=sys.stderr)
            return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
