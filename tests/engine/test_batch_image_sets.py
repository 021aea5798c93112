"""The precomputed image-set job on a local Ray (one CPU): it writes what the render function makes in-process,
leaves out erased shoppers, and prunes other versions. Skipped, saying why, when Ray cannot start here."""

from __future__ import annotations

import shutil
import time

import pytest

from engine.artifacts.bundle import load_bundle
from engine.batch.image_sets import job_config, precompute_image_sets, render_sets
from engine.serving.personaliser import Personaliser
from engine.serving.precomputed import SetParams, decode_set, known_shoppers
from engine.serving.precomputed_store import SqlitePrecomputedStore
from engine.serving.privacy import Identities

KEY = b"batch-test-image-key-0123456789"
PARAMS = SetParams(n=3, neighbours=2)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[data]')")
    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(num_cpus=1, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False)
    except Exception as exc:  # any reason Ray cannot start on this machine
        pytest.skip(f"a local Ray could not start here: {exc}")
    yield ray
    ray.shutdown()


@pytest.fixture
def root(trained_artifacts, tmp_path):
    dst = tmp_path / "artifacts"
    shutil.copytree(trained_artifacts[0], dst)
    return dst


def test_the_job_on_local_ray_writes_the_sets_the_render_function_makes(local_ray, root, tmp_path):
    version = (root / "CURRENT").read_text().strip()
    store = SqlitePrecomputedStore(tmp_path / "sets.sqlite")
    store.put_many("an-old-version", [("ps1-old", "k", b"x")])
    job = Personaliser(load_bundle(root / version), job_config(PARAMS), key=KEY)
    first = known_shoppers(job)[:4]
    Identities(root).register.add([first[1]], time.time())  # erased before the job: left out
    report = precompute_image_sets(
        root, key=KEY, store=store, params=PARAMS, limit=3, workers=1, batch_size=2, show_progress=False
    )
    wanted = [first[0], first[2], first[3]]
    assert report.sets == 3 and report.shoppers == 3 and report.workers == 1 and report.pruned == 1
    figures = report.to_dict()
    assert figures["render_sets_per_second_per_core"] > 0 and figures["sets_per_second_per_core"] > 0
    key = PARAMS.key(job_config(PARAMS))
    assert store.count() == 3 and store.get(version, first[1], key) is None
    for shopper, entry in render_sets(job, wanted, PARAMS):
        stored = store.get(version, shopper, key)
        assert stored is not None and decode_set(stored) == decode_set(entry)  # a Ray worker renders alike
