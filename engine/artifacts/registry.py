"""The artifact registry: immutable, versioned model bundles and the pointer that says which one serves.

Layout::

    <root>/<version>/manifest.json          the bundle: schema, package version, seed, data fingerprint,
                                            parents, metrics, timings, UTC time, resolved config
    <root>/<version>/<component>/manifest.json  one per component (embeddings, generator, …)
    <root>/CURRENT                          the serving version's name (swapped atomically)

A bundle is written into ``<root>/.staging-<version>`` and renamed into place only when complete, so a
half-written bundle never looks like a version. Its manifest, written last, records the SHA-256 of every other
file in the bundle (``file_sha256``), and loading verifies them (``engine.artifacts.bundle``): a file that was
truncated, garbled or swapped after the bundle was written is refused. Bundles written before checksums existed
lack the key and load unverified. Promotion verifies the bundle first and refuses it on any problem; the old
pointer stays.

The pointer is replaced, never rewritten: the new name goes to a temporary file that is flushed to disk, then
renamed over ``CURRENT`` and the folder flushed too. A process killed at any moment (``kill -9``, a crash, a
power cut after the rename returned) leaves ``CURRENT`` naming the old version or the new one, never a partial
name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from models.io import read_json, write_json

logger = logging.getLogger(__name__)

BUNDLE_SCHEMA_VERSION = 1
POINTER = "CURRENT"
VERSION_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
#: The bundle manifest's key that maps each other file of the bundle (a POSIX path inside it) to its SHA-256.
CHECKSUMS = "file_sha256"


def package_version() -> str:
    try:
        return metadata.version("vitrine")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def component_manifest(
    *,
    component: str,
    seed: int,
    data_fingerprint: str,
    config: Any = None,
    metrics: dict | None = None,
    parents: list[str] | None = None,
    extra: dict | None = None,
) -> dict:
    return {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "component": component,
        "package_version": package_version(),
        "seed": seed,
        "data_fingerprint": data_fingerprint,
        "parents": parents or [],
        "config": config,
        "metrics": metrics or {},
        "created_at": utc_now(),
        **(extra or {}),
    }


class BundleRefused(Exception):
    """A bundle failed its checks; the message lists every problem found."""


@dataclass(frozen=True)
class BundleInfo:
    version: str
    path: Path
    manifest: dict
    serving: bool


class ArtifactRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def new_version(self, fingerprint: str = "") -> str:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        salt = hashlib.sha1(f"{stamp}{fingerprint}{os.getpid()}{os.urandom(8).hex()}".encode()).hexdigest()[:6]
        return f"{stamp}-{salt}"

    def path(self, version: str) -> Path:
        if not VERSION_RE.match(version):
            raise ValueError(f"{version!r} is not a bundle version (like 20261128T143000Z-a1b2c3)")
        return self.root / version

    def staging(self, version: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f".staging-{version}"
        path.mkdir(parents=True, exist_ok=False)
        return path

    def commit(self, staging: Path, version: str, manifest: dict) -> Path:
        """Flush every staged file to disk and record its checksum in the bundle manifest, written last; then
        move the staged bundle into place."""
        manifest = {**manifest, CHECKSUMS: bundle_checksums(staging, flush=True)}
        write_json(staging / "manifest.json", manifest)
        _flush(staging / "manifest.json")
        final = self.path(version)
        os.replace(staging, final)
        _flush_folder(self.root)
        logger.info("wrote bundle %s", final)
        return final

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def versions(self) -> list[BundleInfo]:
        if not self.root.is_dir():
            return []
        current = self.current()
        infos = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and VERSION_RE.match(p.name) and (p / "manifest.json").is_file():
                try:
                    manifest = read_json(p / "manifest.json")
                except ValueError:
                    manifest = {"error": "manifest.json is not valid JSON"}
                infos.append(BundleInfo(p.name, p, manifest, p.name == current))
        return infos

    def current(self) -> str | None:
        pointer = self.root / POINTER
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        return name or None

    def set_current(self, version: str) -> None:
        """Atomically point the registry at ``version``: a temporary file, flushed to disk, renamed over the
        pointer, and the folder flushed (module docstring)."""
        self.path(version)  # validates the name
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".CURRENT.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(version + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.root / POINTER)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _flush_folder(self.root)
        logger.info("bundle %s now serves", version)


def bundle_checksums(folder: Path, *, flush: bool = False) -> dict[str, str]:
    """The SHA-256 of every file under a bundle folder but its top-level ``manifest.json``, by POSIX path inside
    it; ``flush``: also force each file (and folder) to disk, as a commit does."""
    folder = Path(folder)
    sums = {}
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            if flush:
                _flush_folder(path)
            continue
        rel = path.relative_to(folder).as_posix()
        if rel == "manifest.json":
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
            if flush:
                os.fsync(fh.fileno())
        sums[rel] = digest.hexdigest()
    return sums


def _flush(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _flush_folder(folder: Path) -> None:
    """Force a folder's entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_or_copy(src: str, dst: str) -> str:
    """A ``shutil.copytree`` copy function: a hard link where the file system allows, else a copy. Bundles are
    immutable, so a new bundle (or another registry) can share the unchanged files of an existing one."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
