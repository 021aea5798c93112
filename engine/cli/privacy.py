"""``vitrine privacy``: erase a shopper, audit what remains of one, apply retention, rotate the pseudonym key."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from engine.cli.options import add_artifacts

DEFAULT_DATABASE = "sqlite:///data/events.db"


def _stores(p: argparse.ArgumentParser) -> None:
    add_artifacts(p)
    p.add_argument("--database-url", default=os.environ.get("VITRINE_DATABASE_URL", DEFAULT_DATABASE))
    p.add_argument("--redis-url", default=os.environ.get("VITRINE_REDIS_URL"), help="the servers' shared sessions")
    p.add_argument(
        "--redis-prefix",
        default=os.environ.get("VITRINE_REDIS_PREFIX", "vitrine:"),
        help="the servers' Redis key prefix (default $VITRINE_REDIS_PREFIX, else vitrine:)",
    )


def _cmd_forget(args: argparse.Namespace) -> int:
    from engine.serving.privacy_ops import forget_shopper

    result = forget_shopper(
        args.user_id,
        artifacts=Path(args.artifacts),
        database_url=args.database_url,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
    )
    print(json.dumps(result.to_dict(), indent=2))
    print("erased: serving treats them as new from now on; the next `vitrine train` leaves their data out")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from engine.serving.privacy_ops import audit_shopper

    audit = audit_shopper(
        args.user_id,
        artifacts=Path(args.artifacts),
        database_url=args.database_url,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
        version=args.version,
    )
    for place, count in audit.places.items():
        print(f"  {'ok ' if count == 0 else 'HAS'} {place}: {count}")
    for note in audit.notes:
        print(f"  note: {note}")
    print("no trace remains" if audit.clean else "traces remain (see HAS above)")
    if args.json:
        Path(args.json).write_text(json.dumps(audit.to_dict(), indent=2))
    return 0 if audit.clean else 1


def _cmd_retain(args: argparse.Namespace) -> int:
    from engine.serving.privacy_ops import retain

    removed = retain(args.days, database_url=args.database_url)
    print(f"deleted events and exposures older than {args.days:g} days: {json.dumps(removed)}")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    from features.pseudonyms import rotate_keyring

    ring = rotate_keyring(Path(args.artifacts))
    print(
        f"key {ring.active} is now active; older keys ({', '.join(sorted(set(ring.keys) - {ring.active}))}) "
        "still recognise known shoppers until `vitrine privacy retire-key`"
    )
    return 0


def _cmd_retire(args: argparse.Namespace) -> int:
    from features.pseudonyms import retire_key

    ring = retire_key(Path(args.artifacts), args.key)
    print(f"key {args.key} retired; keys left: {', '.join(sorted(ring.keys))}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    privacy = sub.add_parser("privacy", help="erase, audit and retain shoppers' data; rotate the pseudonym key")
    commands = privacy.add_subparsers(dest="privacy_command", required=True)

    forget = commands.add_parser("forget", help="erase a shopper: events, exposures, sessions; masked from now on")
    forget.add_argument("user_id", help="the shopper's id as the shop knows it")
    _stores(forget)
    forget.set_defaults(func=_cmd_forget)

    audit = commands.add_parser("audit", help="where a shopper's traces remain (exit 1 if any)")
    audit.add_argument("user_id")
    _stores(audit)
    audit.add_argument("--version", help="the bundle to inspect (default: the newest)")
    audit.add_argument("--json", help="also write the audit to this JSON file")
    audit.set_defaults(func=_cmd_audit)

    retain = commands.add_parser("retain", help="delete events and exposures older than --days")
    retain.add_argument("--days", type=float, required=True)
    _stores(retain)
    retain.set_defaults(func=_cmd_retain)

    rotate = commands.add_parser("rotate-key", help="make a new pseudonym key the active one")
    add_artifacts(rotate)
    rotate.set_defaults(func=_cmd_rotate)

    retire = commands.add_parser("retire-key", help="drop an old pseudonym key")
    retire.add_argument("key", help="the key id, e.g. 1")
    add_artifacts(retire)
    retire.set_defaults(func=_cmd_retire)
