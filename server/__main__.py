"""`python -m server [serve] [--config FILE.toml] --port P --data-dir D [--bundle B] [--workers N]
    [--metrics-port M] [--public-http-port H --public-url URL]
    [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] [--auth-config FILE] [--insecure]`
`python -m server compact [--config FILE.toml] [--data-dir D]`
`python -m server migrate [--config FILE.toml] [--data-dir D] [--secrets-dir S]`
`python -m server backup [--config FILE.toml] [--data-dir D] --out FILE`
`python -m server restore --from FILE [--config FILE.toml] [--data-dir D] [--secrets-dir S] [--force]`
`python -m server config-doc [--update FILE]`
`python -m server token --auth-config FILE --name NAME --roles r1,r2 [--replace] | --revoke NAME`
`python -m server audit verify [--config FILE.toml] [--data-dir D] [--secrets-dir S]`
`python -m server audit ref --user-id U | --campaign-id C | --email E | --phone P | --push-token T
    [--config FILE.toml] [--secrets-dir S]`
`python -m server secrets init [--config FILE.toml] [--secrets-dir S]`
`python -m server secrets rotate NAME [--config FILE.toml] [--secrets-dir S] [--keep N]`
`python -m server rotate-key [--config FILE.toml] [--data-dir D] [--secrets-dir S] [--chunk N]`

The store commands take the data dir and the keyrings' dir from their flags, else from the
servers' settings: the `--config` file, then TAILOR_DATA_DIR / TAILOR_SECRETS_DIR, then ./data
and ./var/secrets (a flag given overrides its variable, `_store_settings`). `migrate` and
`rotate-key` open the store with the servers' LMDB settings too (`Store.from_settings`;
`rotate-key` always encrypted and fsynced, `_ROTATION`)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from contract.keyring import ENVIRONMENT_ONLY, environment_only

from .files import private_umask

if TYPE_CHECKING:  # imported where settings load: pydantic is 0.3-0.4 s of CPU `--help` never uses
    from .config import Settings


def _path(text: str) -> Path:
    """A path flag's value. An empty one is refused: `Path("")` is the working directory
    (`--data-dir ""` served and wrote the directory the command ran in; Settings refuses an
    empty TAILOR_DATA_DIR or `data_dir = ""`, but a flag reaches them already a Path)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path would be the working directory: give a "
                                          "path (. for that directory)")
    return Path(text)


def _file_path(text: str) -> Path:
    """A flag naming a file (`--auth-config`): one ending in / names a directory, which
    `Path` drops (`token --auth-config nodir/` wrote a file named `nodir`)."""
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text} names a directory (it ends in /): give the "
                                          f"file, e.g. {text.rstrip('/' + os.sep)}/auth.toml")
    return _path(text)


def _secrets_path(text: str) -> Path | str:
    """`--secrets-dir`: a path, or `none` (any case) kept as the word for the settings to read
    as the servers read it (`contract.keyring.ENVIRONMENT_ONLY`: the environment only)."""
    return ENVIRONMENT_ONLY if environment_only(text) else _path(text)


def _config_argument(p) -> None:
    p.add_argument("--config", type=_path, help="TOML file of settings (field = value, [limits]); "
                   "TAILOR_* variables and flags override it")


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve gRPC (default command)")
    _config_argument(p)
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gRPC port (default 50051; 0 = any free port)")
    p.add_argument("--data-dir", type=_path, help="LMDB store and bundles live here (default ./data)")
    p.add_argument("--bundle", type=_path, help="bundle directory to serve at start")
    p.add_argument("--workers", type=int, help="server processes sharing the port")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics HTTP port")
    p.add_argument("--metrics-host", help="its listen address (default 127.0.0.1, whatever "
                   "--host is)")
    p.add_argument("--public-http-port", type=int, help="public HTTP port: one-click "
                   "unsubscribe /u/<token>, inbound SMS /sms/inbound (HTTPS when TLS is on)")
    p.add_argument("--public-url", help="externally visible base URL of that port, used in "
                   "unsubscribe links (https://...)")
    _security_arguments(p)


def _security_arguments(p) -> None:
    p.add_argument("--tls-cert", type=_path, help="PEM certificate chain: TLS on (re-read on SIGHUP)")
    p.add_argument("--tls-key", type=_path, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=_path, help="PEM CA: mutual TLS, clients need a "
                   "certificate it signed")
    p.add_argument("--auth-config", type=_file_path, help="auth config TOML (tokens and roles)")
    p.add_argument("--insecure", action="store_true", default=None, help="serve a non-loopback "
                   "--host without TLS or --auth-config anyway")


def _store_arguments(p, data_dir: bool = True, secrets_dir: bool = True) -> None:
    """--config (the servers' file) and the paths a store command takes from it unless given."""
    _config_argument(p)
    if data_dir:
        p.add_argument("--data-dir", type=_path, help="the data dir (default: the config file's "
                       "data_dir, TAILOR_DATA_DIR or ./data, as the servers read it)")
    if secrets_dir:
        p.add_argument("--secrets-dir", type=_secrets_path, help="keyring files (default: the "
                       "config file's secrets_dir, TAILOR_SECRETS_DIR or ./var/secrets; none: "
                       "the environment only, TAILOR_SECRET_<NAME>)")


def _compact_parser(sub) -> None:
    p = sub.add_parser("compact", help="rewrite the LMDB store without freed pages (server stopped)")
    _store_arguments(p, secrets_dir=False)


def _migrate_parser(sub) -> None:
    p = sub.add_parser("migrate", help="bring a data dir written by an older Tailor to today's "
                       "key version, encryption and record layouts (servers stopped), as the "
                       "first server to open it would")
    _store_arguments(p)  # the servers' file: data_dir, encryption at rest, LMDB, secrets_dir


def _backup_parsers(sub) -> None:
    p = sub.add_parser("backup", help="write a hot backup (store + bundles) to one tar file, "
                       "while servers run")
    _store_arguments(p, secrets_dir=False)
    p.add_argument("--out", type=_path, required=True, help="tar file to write (.tar.gz: compressed)")
    p = sub.add_parser("restore", help="put a backup into a data dir (server stopped)")
    p.add_argument("--from", dest="archive", type=_path, required=True, help="backup tar file")
    _store_arguments(p)  # secrets_dir: the `erasure` keyring finds the users to erase again
    p.add_argument("--force", action="store_true", help="replace the store and bundles of a "
                   "non-empty data dir")


def _config_doc_parser(sub) -> None:
    p = sub.add_parser("config-doc", help="print the settings reference table (TAILOR_* variables)")
    p.add_argument("--update", type=_path, help="rewrite the table in this Markdown file instead")


def _token_parser(sub) -> None:
    p = sub.add_parser("token", help="mint a bearer token (printed once, last line) or revoke one; "
                       "servers reload on SIGHUP")
    p.add_argument("--auth-config", type=_file_path, required=True,
                   help="auth config to update")
    p.add_argument("--name", help="principal to mint a token for (a new one, unless --replace)")
    p.add_argument("--roles", help="comma-separated roles of the principal (required with --name)")
    p.add_argument("--replace", action="store_true", help="give a principal that exists a new "
                   "token (its old one stops working) and --roles")
    p.add_argument("--revoke", metavar="NAME", help="remove this principal")


def _security_parsers(sub) -> None:
    p = sub.add_parser("audit", help="the audit log")
    acts = p.add_subparsers(dest="action", required=True)
    v = acts.add_parser("verify", help="check the MAC chain; names the first broken line "
                        "(exit 1); TAILOR_SECRET_AUDIT overrides the keyring file")
    _store_arguments(v)
    f = acts.add_parser("ref", help="the target an audit line gives a user, campaign or "
                        "suppressed address (to find the calls about it)")
    which = f.add_mutually_exclusive_group(required=True)
    which.add_argument("--user-id")
    which.add_argument("--campaign-id")
    which.add_argument("--email")
    which.add_argument("--phone")
    which.add_argument("--push-token")
    _store_arguments(f, data_dir=False)  # TAILOR_SECRET_USER_ID overrides the keyring file
    p = sub.add_parser("secrets", help="the server's keyrings")
    acts = p.add_subparsers(dest="action", required=True)
    i = acts.add_parser("init", help="write every missing keyring (for a deployment: run once, "
                        "then give the files to the servers)")
    _store_arguments(i, data_dir=False)
    r = acts.add_parser("rotate", help="new signing key in front; old keys keep verifying "
                        "(restart the servers to sign with it)")
    r.add_argument("name", help="any keyring but store-id: user-id, audit, unsubscribe, "
                   "encryption, erasure, suppression, or an optional one that exists")
    _store_arguments(r, data_dir=False)
    r.add_argument("--keep", type=int, help="old keys kept for verifying (default: all)")
    k = sub.add_parser("rotate-key", help="new encryption master key; re-wrap every data key "
                       "under it while servers run (resumes if interrupted; the `encryption` "
                       "keyring file is rewritten: an environment keyring cannot be rotated here)")
    _store_arguments(k)
    k.add_argument("--chunk", type=int, default=1000, help="data keys per write transaction")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _compact_parser(sub)
    _migrate_parser(sub)
    _backup_parsers(sub)
    _config_doc_parser(sub)
    _token_parser(sub)
    _security_parsers(sub)
    return parser


def _data_dir(args) -> Path:
    """--data-dir, else the servers' (`--config` file, TAILOR_DATA_DIR, ./data)."""
    return args.data_dir or _store_settings(args).data_dir


def _secrets_dir(args) -> Path | None:
    """--secrets-dir, else the servers' (`--config` file, TAILOR_SECRETS_DIR, ./var/secrets);
    None for `none`, the environment only."""
    if args.secrets_dir == ENVIRONMENT_ONLY:
        return None
    return args.secrets_dir or _store_settings(args).secrets_dir


def _keyring_files(args) -> Path:
    """The secrets dir of a command that writes keyring files (`secrets init`, `secrets
    rotate`, `rotate-key`), which read no variable: with `none` (the environment only) they
    said "set TAILOR_SECRET_<NAME>" even when it was set."""
    from .errors import FailedPrecondition
    secrets_dir = _secrets_dir(args)
    if secrets_dir is None:
        raise FailedPrecondition("secrets_dir is none (the environment only), and this command "
                                 "writes keyring files: give --secrets-dir DIR, or change an "
                                 "environment keyring where it is set")
    return secrets_dir


def _store_settings(args) -> Settings:
    """A store command's settings: the servers' (`_command_settings`) with the command's path
    flags over them, as `serve`'s flags are. A flag given overrides its variable, so a value
    of it the servers would refuse (`TAILOR_DATA_DIR=`, empty) does not stop a command that
    named its own (`audit verify --data-dir D` with TAILOR_DATA_DIR= refused, naming the
    variable it did not use). A value refused names the command's flag beside its variable."""
    flags = {name: getattr(args, name) for name in ("data_dir", "secrets_dir") if hasattr(args, name)}
    return _command_settings(args.config, flags)


def _compact(args) -> None:
    from .store.compaction import compact
    data_dir = _data_dir(args)
    before, after = compact(data_dir, _warn_unconfirmed("compact"))
    print(f"compacted {data_dir / 'store'}: {before} -> {after} bytes")


def _migrate(args) -> None:
    """Every open-time migration of `Store` (server.store.rekey, server.store.migrate), done
    offline: a large store takes longer than a startup probe allows (~50 us an event)."""
    import time

    from .logging import configure_logging
    from .security.secrets import Secrets
    from .store import Store, lock_data_dir
    from .store.crypto import MASTER_RING, STORE_ID_RING
    from .store.lock import check_restore_finished
    settings = _store_settings(args)
    data_dir = settings.data_dir
    store_dir = data_dir / "store"
    check_restore_finished(data_dir)
    if not (store_dir / "data.mdb").exists():
        raise FileNotFoundError(f"no Tailor store under {data_dir}")
    configure_logging()  # the store logs each step and its count
    secrets = Secrets.load(_secrets_dir(args), generate=False,
                           names=(MASTER_RING, STORE_ID_RING), optional=("unsubscribe",))
    lock = lock_data_dir(data_dir, exclusive=True)
    try:
        started = time.perf_counter()
        store = Store.from_settings(settings, secrets)
        try:
            indexed = _backfill_addresses(store, secrets.get("unsubscribe"))
        finally:
            store.close()
    finally:
        lock.close()
    print(json.dumps({"command": "migrate", "store": str(store_dir), "migrated": store.migrated,
                      "address_index": indexed,
                      "seconds": round(time.perf_counter() - started, 3)}))


def _command_settings(config: Path | None, flags: dict) -> Settings:
    """The settings of `serve`, or of a store command as the servers have them: the `config`
    file, then TAILOR_* variables, then the command's `flags` (None: not given); a value refused
    is one line naming where it comes from (FailedPrecondition)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from .config import load_settings, settings_error, variable_error
    from .errors import FailedPrecondition
    try:
        return load_settings(config, **{k: v for k, v in flags.items() if v is not None})
    except ValidationError as err:
        message = settings_error(err, config, flags=flags)
    except SettingsError as err:  # a TAILOR_* variable of a dict or list that is not JSON
        message = variable_error(err)
    except (OSError, ValueError) as err:
        message = str(err)
    raise FailedPrecondition(message)


def _backfill_addresses(store, ring) -> int | None:
    """The address index's walk of the profiles stored before it (`server.profiles.backfill`),
    as a server's first start does it; None without the `unsubscribe` keyring (its hashing
    key: the first server to start does it then)."""
    if ring is None:
        return None
    from .messages.phones import AddressIndex, PhoneIndex
    from .profiles.backfill import backfill_attributes
    return backfill_attributes(store, (PhoneIndex(store, ring), AddressIndex(store, ring, "email")))


def _backup(args) -> None:
    from .backup import backup
    manifest = backup(_data_dir(args), args.out, _warn_unconfirmed("backup"))
    print(json.dumps({"command": "backup", **manifest}))


def _restore(args) -> None:
    from .backup import left_behind, restore
    from .security.secrets import Secrets
    secrets = Secrets.load(_secrets_dir(args), generate=False, names=(),
                           optional=("erasure", "encryption"))
    ring, master = secrets.get("erasure"), secrets.get("encryption")
    manifest = restore(args.archive, _data_dir(args), force=args.force,
                       erasure=ring.keys if ring is not None else (),
                       master=master.keys if master is not None else (),
                       unconfirmed=_warn_unconfirmed("restore"))
    print(json.dumps({"command": "restore", **manifest}))
    if manifest["erased_again"]:  # counts only: no user id is known here
        print(f"restore: erased again {manifest['erased_again']} user(s) erased after the "
              f"backup ({manifest['records_erased_again']} records), by their tombstones",
              file=sys.stderr)
    if manifest["erase_again"]:  # what the operator must do: not only in the JSON
        print(f"restore: {manifest['erase_again']}", file=sys.stderr)
    for line in left_behind(manifest, keyring_given=master is not None):
        print(f"restore: {line}", file=sys.stderr)


def _config_doc(args) -> None:
    from .config_doc import render_table, update_file
    if args.update:
        try:
            changed = update_file(args.update)
        except OSError as err:  # missing, unreadable, not writable: one line, not a traceback
            raise SystemExit(f"config-doc: {args.update}: {(err.strerror or str(err)).lower()}") from None
        except ValueError as err:  # no table markers: a file that is not the operations doc
            raise SystemExit(f"config-doc: {err}") from None
        print(f"{args.update}: {'updated' if changed else 'up to date'}")
    else:
        print(render_table(), end="")


def _warn_unconfirmed(command: str):
    """What a command hands the `durable.Unconfirmed` of its last step to (`compact`,
    `backup`, `restore`, which then return their result): the change is done, and one stderr line says
    what could not be synced."""
    return lambda err: print(f"{command}: done, but {err}", file=sys.stderr)


def _in_place(command: str):
    """A change made whose directory could not be synced (`durable.Unconfirmed`) is done, with
    a warning on stderr: the command goes on to report it (a minted token is printed)."""
    from .durable import reported
    return reported(_warn_unconfirmed(command))


def _token(args) -> None:
    from .durable import reported
    from .security import tokens
    if args.revoke:
        found = True  # an Unconfirmed replace found it and removed it
        with _in_place("token"):
            found = tokens.revoke(args.auth_config, args.revoke)
        if not found:
            raise SystemExit(f"token: no principal {args.revoke!r} in {args.auth_config}")
        print(f"revoked {args.revoke} in {args.auth_config} (send SIGHUP to running servers)")
        return
    if not args.name:
        raise SystemExit("token: --name or --revoke is required")
    roles = _roles(args.roles)
    token = tokens.new_token()
    unconfirmed = []  # the file replaced but not synced: what it replaced, reported all the same
    with reported(lambda err: (unconfirmed.append(err), _warn_unconfirmed("token")(err))):
        replaced = tokens.grant(args.auth_config, args.name, roles, token, replace=args.replace)
    if unconfirmed:
        replaced = unconfirmed[0].replaced
    if replaced is not None:
        print(f"replaced the token and roles ({', '.join(sorted(replaced.roles)) or 'none'}) of "
              f"{args.name}: its old token stops working once servers reload")
    print(f"token for {args.name} ({', '.join(roles)}); only its hash is in "
          f"{args.auth_config}, send SIGHUP to running servers. It is shown once:")
    print(token)


def _roles(text: str | None) -> list[str]:
    """The roles of `--roles`; none is refused: a principal of no role may call only Ping and
    reflection, and `--roles` forgotten (or `--roles "$ROLES"` of an unset variable) made one
    without a word. One of no role is written in the auth config by hand."""
    from .security.roles import ROLE_NAMES
    roles = [r.strip() for r in (text or "").split(",") if r.strip()]
    if not roles:
        raise SystemExit(f"token: --roles is required with --name: a comma-separated list of "
                         f"{', '.join(sorted(ROLE_NAMES))} or a role of the auth config's [roles] "
                         "(a principal of no role may call only Ping and reflection)")
    return roles


def _audit(args) -> None:
    from .security.audit import verify_chain
    from .security.secrets import Secrets
    if args.action == "ref":
        return _audit_ref(args)
    data_dir = _data_dir(args)
    if not data_dir.is_dir():  # a mistyped path would pass: no file, nothing broken
        raise FileNotFoundError(f"no data dir {data_dir}")
    ring = Secrets.load(_secrets_dir(args), generate=False, names=("audit",))["audit"]
    if not (data_dir / "audit").is_dir():  # a server makes it at start: not a data dir
        raise FileNotFoundError(f"no audit log in {data_dir} (no {data_dir / 'audit'}:"
                                " not a server's data dir, or its audit log was removed)")
    result = verify_chain(data_dir / "audit", ring)
    print(json.dumps(result.as_dict()))
    if not result.ok:
        raise SystemExit(f"audit verify: broken at {result.first_broken}: {result.reason}")


def _audit_ref(args) -> None:
    """Print the `target` audit lines give what the flags name: one line per key of the
    `user-id` keyring, the signing key's first (lines written before a `secrets rotate user-id`
    carry an older key's), labelled `u:`, `c:` or `a:` (`userref.target_ref`)."""
    from .contact.addresses import KINDS
    from .security.interceptor import address_target
    from .security.secrets import Secrets
    from .security.userref import CampaignKey, target_ref, use_key
    target = args.user_id if args.user_id is not None else \
        None if args.campaign_id is None else CampaignKey(args.campaign_id)
    if target is None:
        kind, value = next((k, v) for k in KINDS if (v := getattr(args, k)) is not None)
        target = address_target(kind, value)
        if not target:
            raise SystemExit(f"audit ref: not an address of kind {kind}")
    if not target:
        raise SystemExit("audit ref: an empty id (audit lines about nothing have no target)")
    ring = Secrets.load(_secrets_dir(args), generate=False, names=("user-id",))["user-id"]
    for _, key in ring.keys:
        use_key(key)
        print(target_ref(target))


_HASHED = ("records hashed under a dropped key are no longer found (erased users, suppressed "
           "addresses, the impressions DeleteProfile must erase)")
_KEEP_EVERY_KEY = {
    "erasure": _HASHED, "suppression": _HASHED, "user-id": _HASHED,
    "encryption": "data keys wrapped under a dropped master key are unreadable, and with them "
                  "every sealed record; `python -m server rotate-key` moves them to a new master "
                  "key, and once it reports remaining: 0 the old keys may be deleted from the file",
    "audit": "audit lines under a dropped key no longer verify, nor any later line chained to "
             "them (`audit verify` calls the log broken); delete an old key from the file by "
             "hand once retention dropped every audit file it signed",
    "unsubscribe": "every unsubscribe link already sent stops working (the law wants it to "
                   "work for weeks after the send); delete an old key from the file by hand "
                   "once the last message it signed is old enough",
    **dict.fromkeys(("sms-webhook", "delivery-events"),
                    "the provider signs with the old key until it is given the new one: every "
                    "inbound request (a STOP, a bounce, a complaint) is refused meanwhile; give "
                    "the provider the new key, then delete the old one from the file by hand"),
}
"""Keyrings `secrets rotate --keep` is refused for: their old keys are still needed."""


def _secrets(args) -> None:
    from .security.secrets import KEYRINGS, OPTIONAL_KEYRINGS, Secrets
    from .store.crypto import STORE_ID_RING
    if args.action == "init":
        secrets_dir = _keyring_files(args)
        rings = Secrets.load(secrets_dir, generate=True, environ={}, development=False)
        print(json.dumps({"secrets_dir": str(secrets_dir),
                          "signing": {name: rings[name].kid for name in KEYRINGS}}))
        return
    if args.name not in KEYRINGS + OPTIONAL_KEYRINGS:
        raise SystemExit(f"secrets: unknown keyring {args.name!r} "
                         f"(known: {', '.join(KEYRINGS + OPTIONAL_KEYRINGS)})")
    if args.name == STORE_ID_RING:  # every store key is a keyed hash under its signing key
        raise SystemExit(f"secrets: {STORE_ID_RING} is never rotated: the store's keys are hashes "
                         "under it, and a server refuses the store under another key")
    if args.keep is not None and args.name in _KEEP_EVERY_KEY:
        raise SystemExit(f"secrets: --keep would drop {args.name} keys: {_KEEP_EVERY_KEY[args.name]}")
    secrets = Secrets.load(_keyring_files(args), generate=False, names=(args.name,), environ={})
    with _in_place("secrets"):
        secrets.rotate(args.name, keep=args.keep)
    ring = secrets[args.name]
    print(json.dumps({"keyring": args.name, "signing": ring.kid, "keys": [k for k, _ in ring.keys]}))


_ROTATION = {"encrypt_at_rest": True, "lmdb_sync": True}
"""The settings `rotate-key` opens the store with whatever the servers' are (`_rotate_key`)."""


def _rotate_key(args) -> None:
    """`rotate_data_keys` on the store opened as the servers open it (`Store.from_settings`:
    their map size and ceiling, from the `--config` file and TAILOR_* variables), but always
    encrypted and fsynced (`_ROTATION`): the store's `sealed` stamp, checked first, is what
    says it has data keys, not `encrypt_at_rest` (off, a sealed store was refused, "open it
    with encryption on", instead of rotated); and once it reports `remaining: 0` the operator
    drops the old master keys, so every re-wrap must be on disk by then (with `lmdb_sync`
    off, a power loss after the drop would have left data keys under a key no longer kept)."""
    from .errors import FailedPrecondition
    from .security.secrets import Secrets
    from .store import Store, lock_data_dir
    from .store.backup import read_value
    from .store.crypto import MASTER_RING, STORE_ID_RING
    from .store.lock import check_restore_finished
    from .store.rekey import SEALED_KEY
    from .store.rotation import rotate_data_keys
    from .store.sharing import hold_layouts
    settings = _store_settings(args)
    data_dir = settings.data_dir
    store_dir = data_dir / "store"
    check_restore_finished(data_dir)
    if not (store_dir / "data.mdb").exists():
        raise FileNotFoundError(f"no Tailor store under {data_dir}")
    if read_value(store_dir, "meta", SEALED_KEY) is None:  # opening it encrypted would seal it
        raise FailedPrecondition(f"the store under {data_dir} is not encrypted at rest (served "
                                 "with TAILOR_ENCRYPT_AT_REST=false, or written by an older Tailor: "
                                 "`python -m server migrate` first): it has no data keys to rotate")
    secrets = Secrets.load(_keyring_files(args), generate=False, names=(MASTER_RING, STORE_ID_RING),
                           environ={})
    lock = lock_data_dir(data_dir, exclusive=False)  # beside servers; not during compaction
    try:
        with hold_layouts(store_dir):  # not beside a server of other layouts (store.sharing)
            store = Store.from_settings(settings.model_copy(update=_ROTATION), secrets,
                                        _without_keyring_variables())  # a mismatch names the file
            try:
                print(json.dumps(rotate_data_keys(store, secrets, chunk=max(args.chunk, 1))))
            finally:
                store.close()
    finally:
        lock.close()


def _without_keyring_variables() -> dict[str, str]:
    """The environment without the keyrings' variables (`TAILOR_SECRET_<NAME>`), which
    rotate-key does not read (`environ={}`), for `store_id_origin` to name the file it read
    (TAILOR_SECRETS_DIR, which chose the file's directory, is kept)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_SECRET_")}


COMMANDS = {"audit": _audit, "secrets": _secrets, "rotate-key": _rotate_key,
            "compact": _compact, "migrate": _migrate, "backup": _backup, "restore": _restore,
            "config-doc": _config_doc,
            "token": _token}
"""Every subcommand but `serve`; a refusal or a missing file exits non-zero with the reason."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    private_umask(args.command)  # before anything is written: 0600 files, 0700 dirs (server.files)
    if args.command == "serve":
        # stop signals wait until the server handles them (server.workers)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        # The server owns the workers' metrics directory (server.workers): one given in the
        # environment would make prometheus-client, imported next, keep a one-process server's
        # samples there and serve every file in it, earlier servers' included.
        for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
            os.environ.pop(name, None)
        _serve(args)
        return
    from .durable import Unconfirmed
    from .errors import FailedPrecondition, ResourceExhausted
    # A reload sent by name (`pkill -HUP -f "python -m server"`) reaches these commands too:
    # they have nothing to reload, and dying of it would cut a backup, compaction, migration,
    # restore or key rotation short.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        COMMANDS[args.command](args)
    except (FailedPrecondition, ResourceExhausted, FileNotFoundError, Unconfirmed) as err:
        # ResourceExhausted: a store full at its ceiling or disk; Unconfirmed: a step made that
        # its next one relied on (`secrets init`'s keyrings, rotate-key's new key)
        raise SystemExit(f"{args.command}: {err}") from None
    except KeyboardInterrupt:  # Ctrl-C: one line, exit 130 as a shell's; what a command
        print(f"{args.command}: interrupted", file=sys.stderr)  # left, its next run handles
        raise SystemExit(130) from None  # (a restore mid-swap: the data dir is refused till then)


def _serve(args) -> None:
    """Serve; a setting refused, a config file unreadable, a port in use or a bundle refused at
    start prints one `error:` line and exits 2 (no traceback); so does an OSError of a kind
    the host causes (`start_errors.HOST_ERRORS`: a directory this account may not write, a
    read-only or full disk, a port taken) and a directory that could not be synced
    (`durable.Unconfirmed`). Any other exception is a bug and keeps its traceback."""
    from .errors import TailorError
    from .start_errors import start_error
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        settings = _command_settings(args.config, flags)
    except TailorError as err:
        _user_error(str(err))
    from .workers import serve
    reread = None if args.config is None else lambda: _command_settings(args.config, flags)
    try:
        serve(settings, reread)
    except TailorError as err:
        _user_error(str(err))
    except OSError as err:
        message = start_error(err, settings, flags)
        if message is None:
            raise
        _user_error(message)


def _user_error(message: str):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
