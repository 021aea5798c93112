"""Shopper pseudonyms: a keyed HMAC of the shopper id, so that Vitrine never stores the id a shop sent.

Every entry point (the HTTP API, the log readers, the event store's writers) turns a shop's shopper id into

    ps<key id>-<22 base64url characters>

the first 128 bits of HMAC-SHA256(key, id). Without the key a pseudonym cannot be linked back to the id, nor
computed from it; with the key the same id always gives the same pseudonym, so a shopper's events, bundles and
experiment assignments still join. The key id in the pseudonym says which key made it.

Keys live in a keyring file (JSON, mode 0600): ``{"active": "2", "keys": {"1": "...", "2": "..."}}``. The active
key makes new pseudonyms; the others are kept for lookups until retired, so a shopper known under an old key is
still recognised after a rotation (:meth:`Pseudonymiser.candidates`). ``docs/SECURITY.md`` gives the procedure.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

KEYRING_FILE = ".pseudonym-keys.json"
MIN_KEY_BYTES = 16
PSEUDONYM_RE = re.compile(r"^ps[0-9]{1,6}-[A-Za-z0-9_-]{22}$")


class KeyringError(ValueError):
    """The keyring file is missing what it needs, or a key is too short."""


class Pseudonymiser:
    """Raw shopper id -> pseudonym under the active key; :meth:`candidates` gives it under every key."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise KeyringError(f"the active key {active!r} is not in the keyring (keys: {sorted(keys)})")
        for kid, key in keys.items():
            if not re.fullmatch(r"[0-9]{1,6}", kid):
                raise KeyringError(f"key id {kid!r}: use 1-6 digits")
            if len(key) < MIN_KEY_BYTES:
                raise KeyringError(f"key {kid!r} is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
        self.keys = dict(keys)
        self.active = active

    def __call__(self, user_id: str) -> str:
        return self.under(self.active, user_id)

    def under(self, kid: str, user_id: str) -> str:
        digest = hmac.new(self.keys[kid], user_id.encode("utf-8"), hashlib.sha256).digest()[:16]
        return f"ps{kid}-{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"

    def candidates(self, user_id: str) -> list[str]:
        """The shopper's pseudonym under every key in the ring, the active key's first."""
        others = sorted((k for k in self.keys if k != self.active), key=int, reverse=True)
        return [self.under(kid, user_id) for kid in (self.active, *others)]

    @staticmethod
    def is_pseudonym(value: str) -> bool:
        return bool(PSEUDONYM_RE.match(value))


def pseudonymise_column(values: pd.Series, ring: Pseudonymiser) -> pd.Series:
    """A column of shopper ids as pseudonyms (the active key); values that are pseudonyms already stay."""
    unique = pd.unique(values.astype(str))
    mapping = {u: u if Pseudonymiser.is_pseudonym(u) else ring(u) for u in unique}
    return values.astype(str).map(mapping)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = {str(k): base64.urlsafe_b64decode(v.encode() + b"==") for k, v in data["keys"].items()}
        return {"active": str(data["active"]), "keys": keys}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyringError(
            f"cannot read the pseudonym keyring {path}: {exc}; it holds {{'active': id, 'keys': {{id: key}}}}"
        ) from exc


def _write(path: Path, active: str, keys: Mapping[str, bytes]) -> None:
    """Write the ring atomically (a new file renamed over the old one), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"active": active, "keys": {k: base64.urlsafe_b64encode(v).decode() for k, v in keys.items()}}
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_keyring(path: Path) -> Pseudonymiser:
    data = _read(Path(path))
    return Pseudonymiser(data["keys"], data["active"])


def load_or_create_keyring(root: Path) -> Pseudonymiser:
    """The keyring in ``root`` (the artifacts folder that training and serving share), created once with one
    random key when there is none: every worker and every run on this host then pseudonymise alike."""
    path = Path(root) / KEYRING_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process created it first
            _write_new(path)
    return load_keyring(path)


def _write_new(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"active": "1", "keys": {"1": key}}, f)


def rotate_keyring(root: Path) -> Pseudonymiser:
    """Add a new random key and make it the active one; the old keys stay for lookups until retired."""
    path = Path(root) / KEYRING_FILE
    ring = load_or_create_keyring(root)
    kid = str(max(int(k) for k in ring.keys) + 1)
    keys = {**ring.keys, kid: secrets.token_bytes(32)}
    _write(path, kid, keys)
    return Pseudonymiser(keys, kid)


def retire_key(root: Path, kid: str) -> Pseudonymiser:
    """Drop an old key: pseudonyms made with it can no longer be linked to a shopper id by anyone."""
    path = Path(root) / KEYRING_FILE
    ring = load_keyring(path)
    if kid == ring.active:
        raise KeyringError(f"key {kid!r} is the active key; rotate first, then retire it")
    if kid not in ring.keys:
        raise KeyringError(f"no key {kid!r} in the keyring (keys: {sorted(ring.keys)})")
    keys = {k: v for k, v in ring.keys.items() if k != kid}
    _write(path, ring.active, keys)
    return Pseudonymiser(keys, ring.active)
