"""`python -m training push BUNDLE --server HOST:PORT`: hand a bundle to a running server.

The server validates it (manifest, sha256, ONNX signatures, index dimension) and swaps it in;
a refused bundle prints the server's reason and exits 1 while the old version keeps serving.
With `--canary P` it serves the bundle to P% of users only (a stable hash of the user id) while
the guardrails compare it with the active version (docs/operations.md, "Canary releases").
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from clients.transport import add_arguments
from training.cli.types import canary_percent, timeout_seconds

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("push", help="upload a bundle to a running server and serve it",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="bundle directory (holds manifest.json)")
    p.add_argument("--server", default="127.0.0.1:50051", help="host:port (default %(default)s)")
    add_arguments(p)
    p.add_argument("--stage-only", action="store_true",
                   help="validate and store, keep serving the current one")
    p.add_argument("--canary", type=canary_percent, default=None, metavar="PERCENT",
                   help="serve it to this percentage of users as a canary, 0.01..99.99")
    p.add_argument("--new-catalog", action="store_true",
                   help="serve it (or its canary) though it shares no item id with the serving "
                        "bundle: a deliberate change of catalog, as from the demo bundle to your "
                        "own (without it such a push is refused)")
    p.add_argument("--timeout", type=timeout_seconds, default=900.0, help="seconds for upload + validation")
    p.set_defaults(func=run)


def run(args) -> int:
    from clients import TailorClient, TailorError
    from clients.client import bundle_files

    from .progress import progress

    with TailorClient(args.server, timeout=args.timeout, tls_ca=args.tls_ca, cert=args.cert,
                      key=args.key, token=args.token, insecure=args.insecure) as client:
        size = sum(f.stat().st_size for f in bundle_files(args.bundle))
        try:
            with progress(desc="push", total=size, unit="B", unit_scale=True) as bar:
                status = client.push_bundle(args.bundle, stage_only=args.stage_only,
                                            timeout=args.timeout, on_chunk=bar.update,
                                            canary_percent=args.canary or 0.0,
                                            new_catalog=args.new_catalog)
        except TailorError as err:
            print(f"push refused: {err}", file=sys.stderr)
            return 1
    print(json.dumps(dataclasses.asdict(status), indent=2))
    return 0
