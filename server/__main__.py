"""`python -m server [serve] --port P --data-dir D [--bundle B] [--workers N] [--metrics-port M]
    [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] [--auth-config FILE] [--insecure]`
`python -m server compact --data-dir D`
`python -m server backup --data-dir D --out FILE`
`python -m server restore --from FILE --data-dir D [--force]`
`python -m server config-doc [--update FILE]`"""
from __future__ import annotations

import argparse
import json
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
    _security_arguments(p)


def _security_arguments(p) -> None:
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain: TLS on (re-read on SIGHUP)")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=Path, help="PEM CA: mutual TLS, clients need a "
                   "certificate it signed")
    p.add_argument("--auth-config", type=Path, help="auth config TOML (tokens and roles)")
    p.add_argument("--insecure", action="store_true", default=None, help="serve a non-loopback "
                   "--host without TLS or --auth-config anyway")


def _compact_parser(sub) -> None:
    p = sub.add_parser("compact", help="rewrite the LMDB store without freed pages (server stopped)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))


def _backup_parsers(sub) -> None:
    p = sub.add_parser("backup", help="write a hot backup (store + bundles) to one tar file, "
                       "while servers run")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--out", type=Path, required=True, help="tar file to write (.tar.gz: compressed)")
    p = sub.add_parser("restore", help="put a backup into a data dir (server stopped)")
    p.add_argument("--from", dest="archive", type=Path, required=True, help="backup tar file")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--force", action="store_true", help="replace the store and bundles of a "
                   "non-empty data dir")


def _config_doc_parser(sub) -> None:
    p = sub.add_parser("config-doc", help="print the settings reference table (TAILOR_* variables)")
    p.add_argument("--update", type=Path, help="rewrite the table in this Markdown file instead")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _compact_parser(sub)
    _backup_parsers(sub)
    _config_doc_parser(sub)
    return parser


def _compact(args) -> None:
    from .store.compaction import compact
    before, after = compact(args.data_dir)
    print(f"compacted {args.data_dir / 'store'}: {before} -> {after} bytes")


def _backup(args) -> None:
    from .backup import backup
    print(json.dumps({"command": "backup", **backup(args.data_dir, args.out)}))


def _restore(args) -> None:
    from .backup import restore
    print(json.dumps({"command": "restore", **restore(args.archive, args.data_dir, force=args.force)}))


def _config_doc(args) -> None:
    from .config_doc import render_table, update_file
    if args.update:
        print(f"{args.update}: {'updated' if update_file(args.update) else 'up to date'}")
    else:
        print(render_table(), end="")


COMMANDS = {"compact": _compact, "backup": _backup, "restore": _restore, "config-doc": _config_doc}
"""Every subcommand but `serve`; a refusal or a missing file exits non-zero with the reason."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
        from .workers import serve
        serve(Settings(**overrides))
        return
    from .errors import FailedPrecondition
    try:
        COMMANDS[args.command](args)
    except (FailedPrecondition, FileNotFoundError) as err:
        raise SystemExit(f"{args.command}: {err}") from None


if __name__ == "__main__":
    main()
