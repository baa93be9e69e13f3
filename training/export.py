"""`python -m training export --server HOST:PORT --out interactions.csv`: read tracked events back
from a running server (ProfileService/ExportEvents) as a training interactions file (with each
event's channel, for `train --context-features`), closing the
loop: track → export → train → push. The server's tombstones (erased users as keyed hashes,
ExportTombstones) go to ``tombstones.csv`` beside it, where `train` finds them
(`training.erasure`). With ``--impressions`` the impression log (ModelAdminService/
ExportImpressions: every Recommend answer with its items, scores and joined clicks, add-to-carts
and purchases) goes to ``impressions.jsonl`` beside it, one JSON object per impression
(`IMPRESSION_FIELDS`, docs/impressions.md).

An event whose item id holds a character no id may hold now (`contract.ids`: a C1 or
bidirectional control, U+2028, U+2029, a format character (Unicode Cf: U+FEFF, U+200B, U+00AD,
...), tracked before they were refused and kept for the retention window) is left out and
counted: `train` refuses an item id the server cannot name (the server refuses a bundle
holding one), so it would refuse the whole file for it."""
from __future__ import annotations

import csv
import errno
import os
import sys
from pathlib import Path

from clients.transport import add_arguments
from contract.ids import id_control_problem

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="write the server's tracked events as interactions.csv")
    p.add_argument("--server", default="127.0.0.1:50051", help="host:port (default %(default)s)")
    add_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    p.add_argument("--start", type=float, default=0.0, help="unix seconds, inclusive (0 = unbounded)")
    p.add_argument("--end", type=float, default=0.0, help="unix seconds, inclusive (0 = unbounded)")
    p.add_argument("--tombstones-out", type=Path, default=None,
                   help="where the erased users' tombstones go (default: tombstones.csv beside --out)")
    p.add_argument("--impressions", action="store_true",
                   help="also write the impression log with joined outcomes (impressions.jsonl)")
    p.add_argument("--impressions-out", type=Path, default=None,
                   help="where it goes (default: impressions.jsonl beside --out)")
    p.set_defaults(func=run)


def run(args) -> int:
    from clients import TailorClient, TailorError

    from .progress import progress

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tombstones_out = args.tombstones_out or args.out.with_name("tombstones.csv")
    if not tombstones_out.parent.is_dir():  # written last: fail before the whole stream
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(tombstones_out.parent))
    written = skipped = unnamable = 0
    failed = None
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    impressions = ((args.impressions_out or args.out.with_name("impressions.jsonl"))
                   if args.impressions else None)
    with TailorClient(args.server, tls_ca=args.tls_ca, cert=args.cert, key=args.key,
                      token=args.token, insecure=args.insecure) as client, \
            open(tmp, "w", newline="") as fh:
        out = csv.writer(fh)
        # channel: what `train --context-features` fits its context tables from
        out.writerow(["user_id", "item_id", "timestamp", "event", "value", "channel"])
        try:
            for ev in progress(client.export_events(args.start, args.end), desc="export",
                               unit=" events"):
                if not ev.item_id:
                    skipped += 1  # interactions need an item; sends without one are not training rows
                    continue
                if id_control_problem(ev.item_id):  # tracked before such ids were refused
                    unnamable += 1
                    continue
                out.writerow([ev.user_id, ev.item_id, int(ev.timestamp), ev.type, ev.value,
                              ev.channel])
                written += 1
            shown = (_write_impressions(client, impressions, args.start, args.end)
                     if impressions is not None else None)
            # Tombstones last: a user erased while the events streamed (rows read before the
            # erasure are in the file) has their tombstone in it, and train drops those rows.
            erased = _write_tombstones(client, tombstones_out)
        except TailorError as err:
            failed = err
        except BaseException:  # a file that cannot be written, an interrupt: no partial file
            _drop_partial(tmp, impressions)
            raise
    if failed is not None:  # no partial file left behind (the helpers remove theirs)
        _drop_partial(tmp, impressions)
        print(f"export failed: {failed}", file=sys.stderr)
        return 1
    if shown is not None:  # the impressions too only once the tombstones beside them are
        _impressions_tmp(impressions).replace(impressions)
    tmp.replace(args.out)
    also = "" if shown is None else f" and {shown} impressions"
    left = (f", {unnamable} events whose item id no id may hold now left out (contract.ids)"
            if unnamable else "")
    print(f"wrote {written} interactions to {args.out} ({skipped} events without an item skipped"
          f"{left}), {erased} tombstones{also} beside it")
    return 0


IMPRESSION_FIELDS = ("request_id", "user_ref", "user_id", "timestamp", "model_version", "channel",
                     "context", "cold_start", "items", "first_click", "clicks", "add_to_carts",
                     "purchases", "revenue")
"""Keys of each impressions.jsonl object (tailor.v1.Impression; `items`: item_id, position
(1-based), score, clicked, carted, purchased each; `first_click`: 1-based, 0 none, -1 unknown)."""


def _drop_partial(tmp: Path, impressions: Path | None) -> None:
    """Remove the interactions' and the impressions' files in progress (a failed export)."""
    tmp.unlink(missing_ok=True)
    if impressions is not None:
        _impressions_tmp(impressions).unlink(missing_ok=True)


def _impressions_tmp(path: Path) -> Path:
    """Where `_write_impressions` writes `path` until the export puts it in place."""
    return path.with_suffix(path.suffix + ".tmp")


def _write_impressions(client, path: Path, start: float, end: float) -> int:
    import json

    from google.protobuf import json_format

    from .progress import progress
    tmp, n = _impressions_tmp(path), 0
    try:
        with open(tmp, "w") as fh:
            for imp in progress(client.export_impressions(start, end), desc="impressions",
                                unit=" impressions"):
                row = json_format.MessageToDict(imp, preserving_proto_field_name=True,
                                                always_print_fields_with_no_presence=True)
                fh.write(json.dumps({k: row[k] for k in IMPRESSION_FIELDS},
                                    separators=(",", ":")))
                fh.write("\n")
                n += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n  # in `tmp`: the caller puts it in place once the tombstones are written


def _write_tombstones(client, path: Path) -> int:
    from contract.erasure import write_tombstones

    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        n = write_tombstones(tmp, client.export_tombstones())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return n
