"""Shared test setup. implicit asks for single-threaded OpenBLAS; set it before numpy loads BLAS."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Most tests are about what the API answers, not who may ask: apps built in tests answer requests without a
# credential as a back end would. tests/api/test_security.py builds apps with it off and tests the credentials.
os.environ.setdefault("VITRINE_OPEN_ACCESS", "1")

from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Test tensors are tiny: one thread is as fast, and on a shared 2-core machine far steadier (a second
    thread that waits for a busy core made a 1-second test take a minute)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> Path:
    """A small demo store (real generator, small sizes), shared by the tests that need shop data."""
    from engine.world import DemoStoreConfig, write_demo_store

    out = tmp_path_factory.mktemp("store") / "demo"
    write_demo_store(out, DemoStoreConfig(n_items=320, n_users=300, weeks=3, seed=7), show_progress=False)
    return out


@pytest.fixture(scope="session")
def trained_artifacts(demo_store, tmp_path_factory) -> tuple[Path, str]:
    """A bundle trained with the tiny preset on the small demo store, promoted. Returns (root, version)."""
    from engine.training.config import load_train_config
    from engine.training.pipeline import train_bundle

    root = tmp_path_factory.mktemp("artifacts")
    version = train_bundle(
        demo_store, root, load_train_config("tiny", overrides={"seed": 1}), show_progress=False, promote=True
    )
    return root, version


@pytest.fixture(scope="session")
def shopper_ids(demo_store, trained_artifacts) -> list[str]:
    """The demo store's shoppers that the trained bundle knows, by the store's own ids (the bundle holds only
    their pseudonyms), in the store's order."""
    import numpy as np

    from engine.serving.privacy import shoppers_known_to
    from features.pseudonyms import load_or_create_keyring

    root, version = trained_artifacts
    with np.load(root / version / "embeddings" / "factors.npz") as f:
        known = set(f["user_ids"].astype(str))
    return shoppers_known_to(demo_store, load_or_create_keyring(root), known.__contains__, 200)


@pytest.fixture(scope="session")
def sparse_artifacts(trained_artifacts, tmp_path_factory) -> tuple[Path, str, dict[str, str]]:
    """The trained bundle, copied into a registry of its own with one combination of attribute values missing from
    its catalogue (the small demo store has every one, each once: that item's pattern is relabelled, so its photo
    no longer matches its labels). Returns (root, version, the missing combination)."""
    import shutil

    import pandas as pd

    from engine.artifacts.registry import CHECKSUMS, ArtifactRegistry
    from models.io import read_json

    root, version = trained_artifacts
    registry = ArtifactRegistry(tmp_path_factory.mktemp("sparse-artifacts"))
    copy = registry.new_version("sparse")
    staging = registry.staging(copy)
    shutil.copytree(root / version, staging, dirs_exist_ok=True)
    items = pd.read_parquet(staging / "catalogue" / "items.parquet")
    missing = {a: str(items.at[0, a]) for a in ("class", "colour", "pattern")}
    items.at[0, "pattern"] = next(p for p in sorted(items["pattern"].unique()) if p != missing["pattern"])
    still = (items[list(missing)] == pd.Series(missing)).all(axis=1)
    assert not still.any(), "the small demo store was meant to hold each combination once"
    items.to_parquet(staging / "catalogue" / "items.parquet", index=False)
    manifest = read_json(staging / "manifest.json")
    manifest.pop(CHECKSUMS, None)
    registry.commit(staging, copy, manifest)
    registry.set_current(copy)
    return registry.root, copy, missing


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis, 127.0.0.1:6379 db 0; a test that needs it skips, saying why, when it does not answer.
    Tests write under key prefixes or session ids of their own and delete them afterwards."""
    from engine.serving.sessions import RedisSessionStore

    url = "redis://127.0.0.1:6379/0"
    problem = RedisSessionStore.from_url(url).problem()
    if problem:
        pytest.skip(f"{problem} (start redis-server to run the tests that need Redis)")
    return url


@pytest.fixture
def redis_cleanup(redis_url):
    """Key patterns (append to the list) whose keys on the test Redis are deleted after the test."""
    import redis

    patterns: list[str] = []
    yield patterns
    with redis.Redis.from_url(redis_url) as client:
        keys = [key for pattern in patterns for key in client.scan_iter(match=pattern)]
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_prefix(redis_cleanup) -> str:
    """A key prefix of the test's own on the test Redis; every key under it is deleted afterwards."""
    import uuid

    prefix = f"vitrine-test:{uuid.uuid4().hex[:12]}:"
    redis_cleanup.append(f"{prefix}*")
    return prefix
