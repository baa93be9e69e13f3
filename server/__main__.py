"""`python -m server [serve] --port P --data-dir D [--bundle B] [--workers N] [--metrics-port M]`
`python -m server compact --data-dir D`"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import Settings


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve gRPC (default command)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gRPC port (default 50051; 0 = any free port)")
    p.add_argument("--data-dir", type=Path, help="LMDB store and bundles live here (default ./data)")
    p.add_argument("--bundle", type=Path, help="bundle directory to serve at start")
    p.add_argument("--workers", type=int, help="server processes sharing the port")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics HTTP port")


def _compact_parser(sub) -> None:
    p = sub.add_parser("compact", help="rewrite the LMDB store without freed pages (server stopped)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv.insert(0, "serve")
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _compact_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "compact":
        from .errors import FailedPrecondition
        from .store.compaction import compact
        try:
            before, after = compact(args.data_dir)
        except (FailedPrecondition, FileNotFoundError) as err:
            raise SystemExit(f"compact: {err}") from None
        print(f"compacted {args.data_dir / 'store'}: {before} -> {after} bytes")
        return
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    settings = Settings(**overrides)
    if args.command == "serve":
        from .workers import serve
        serve(settings)


if __name__ == "__main__":
    main()
