"""``vitrine experiments simulate loop``: the closed loop of :mod:`engine.experiments.loop` with two arms, one
retrained every night from its own event store, one frozen.

For each seed, two API servers (``vitrine serve`` subprocesses with the client clock on) serve the same
shoppers: each has its own copy of the starting bundle registry and its own SQLite event store. After each
day the *retrained* arm runs :func:`nightly_retrain`: new embeddings from the store's logs plus the arm's
event store (:func:`engine.training.retrain.retrain_embeddings`), promoted, and loaded by its server through
``POST /v1/admin/reload``. The *frozen* arm keeps its bundle.

Both arms start from the same bundle: the given registry's serving bundle with its embeddings retrained on the
store's logs alone (*night 0*). A nightly retrain keeps the parent's generator, classifier and index but not
a visual encoder, which is fitted to one set of embeddings; starting both arms from a bundle made the same way
means they serve sets the same way (without preference maximisation), and differ only by what the embeddings
have seen.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from engine.artifacts.promotion import promote_bundle
from engine.artifacts.registry import ArtifactRegistry, link_or_copy
from engine.experiments.http_api import ApiClient, local_api
from engine.experiments.loop import Arm, LoopRun, LoopSettings, loop_start, make_population, run_loop
from engine.experiments.loop_report import loop_report
from engine.training.config import TrainConfig, build_config
from engine.training.retrain import retrain_embeddings
from engine.world.tastes import Taste
from features.pseudonyms import KEYRING_FILE
from models.io import read_json

logger = logging.getLogger(__name__)

RETRAINED, FROZEN = "retrained", "frozen"

#: (artifacts, database_url) → a running API on that registry and event store
ApiFactory = Callable[[Path, str], AbstractContextManager[ApiClient]]


@dataclass
class ClosedLoop:
    """Every seed's :class:`~engine.experiments.loop.LoopRun`, the report, and the bundle both arms started from."""

    runs: list[LoopRun]
    report: dict[str, Any]
    starting_bundle: str


def nightly_retrain(store: Path, artifacts: Path, database_url: str, *, ranker_bag: int | None = None) -> str:
    """Retrain the serving bundle's embeddings and ranker on ``store``'s logs plus the events at ``database_url``
    and make the new bundle serve. Promotion is forced: the key metric is validated on the last days of the
    log, which the loop's own events keep moving, so the gate would compare bundles on different data.
    ``ranker_bag`` (None: the bundle's own setting) is the number of LightGBM models in the nightly ranker."""
    config = None
    if ranker_bag is not None:
        registry = ArtifactRegistry(artifacts)
        current = registry.current()
        manifest = read_json(registry.path(current) / "manifest.json") if current else {}
        config = build_config(TrainConfig, manifest.get("config", {}), source=f"bundle {current}")
        config = replace(config, ranker=replace(config.ranker, bag=ranker_bag))
    version, _ = retrain_embeddings(store, artifacts, events=[database_url], config=config, show_progress=False)
    promote_bundle(ArtifactRegistry(artifacts), version, force=True)
    return version


def starting_bundle(store: Path, source: Path, into: Path) -> str:
    """Night 0 (module docstring): ``source``'s serving bundle, copied to the registry ``into``, with its
    embeddings retrained on ``store``'s logs alone; the new bundle serves there. Returns its version."""
    version = ArtifactRegistry(source).current()
    if version is None:
        raise ValueError(f"no serving bundle under {source}; train one (`make demo`) or pass --artifacts")
    copy_registry(source, into, version)
    start, _ = retrain_embeddings(store, into, show_progress=False)
    promote_bundle(ArtifactRegistry(into), start, force=True)
    return start


def copy_registry(source: Path, into: Path, version: str) -> None:
    """A registry at ``into`` holding ``source``'s bundle ``version`` (hard links where possible: bundles are
    immutable), serving it, with the pseudonym keyring that bundle's shoppers are known by."""
    registry = ArtifactRegistry(source)
    shutil.copytree(registry.path(version), ArtifactRegistry(into).path(version), copy_function=link_or_copy)
    keyring = Path(source) / KEYRING_FILE
    if keyring.is_file():
        shutil.copy2(keyring, Path(into) / KEYRING_FILE)
    ArtifactRegistry(into).set_current(version)


def _subprocess_api(artifacts: Path, database_url: str) -> AbstractContextManager[ApiClient]:
    return local_api(artifacts, database_url=database_url)


def run_closed_loop(
    store: Path,
    artifacts: Path,
    settings: LoopSettings,
    seeds: Sequence[int],
    *,
    workdir: Path | None = None,
    api: ApiFactory = _subprocess_api,
    nightly_ranker_bag: int | None = 1,
    show_progress: bool = True,
) -> ClosedLoop:
    """The loop for every seed of ``seeds`` (``settings.seed`` is replaced by each), shoppers from the demo
    store ``store`` (known: users in its logs, with their hidden tastes), starting from ``artifacts``' serving
    bundle (trained on ``store``). Each seed's registries and event stores live under ``workdir`` (default: a
    temporary folder, removed afterwards). ``nightly_ranker_bag``: LightGBM models in each nightly ranker (1:
    a night takes seconds rather than minutes; None: the bundle's own). Returns every seed's run and the report
    (:func:`~engine.experiments.loop_report.loop_report`, with the seconds it took)."""
    from engine.world import load_tastes
    from features.readers import read_store

    t0 = time.perf_counter()
    tastes = load_tastes(store)
    data = read_store(store)
    logs = data.events
    known = {u: tastes[u] for u in sorted(set(logs["user_id"].astype(str)) & set(tastes))}
    start = loop_start(logs["timestamp"].max().to_pydatetime())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would drown the output
    runs: list[LoopRun] = []
    with ExitStack() as stack:
        root = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loop-")))
        base = root / "start"
        first = starting_bundle(store, artifacts, base)
        logger.info("both arms start from bundle %s (night 0); the loop starts %s", first, start.isoformat())
        for seed in seeds:
            one = replace(settings, seed=seed)
            runs.append(
                _one_seed(
                    store, base, first, known, data.catalogue, one, root, start, api, show_progress, nightly_ranker_bag
                )
            )
    report = loop_report(runs, settings, treated=RETRAINED, control=FROZEN)
    report["settings"]["start"] = start.isoformat()
    report["starting_bundle"] = first
    report["settings"]["nightly_ranker_bag"] = nightly_ranker_bag
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return ClosedLoop(runs=runs, report=report, starting_bundle=first)


def _one_seed(
    store: Path,
    base: Path,
    first: str,
    known: dict[str, Taste],
    catalogue: pd.DataFrame,
    settings: LoopSettings,
    root: Path,
    start: datetime,
    api: ApiFactory,
    show_progress: bool,
    ranker_bag: int | None,
) -> LoopRun:
    population = make_population(known, settings)
    with ExitStack() as stack:
        arms = []
        for name in (RETRAINED, FROZEN):
            folder = root / f"seed-{settings.seed}" / name
            copy_registry(base, folder / "artifacts", first)
            url = f"sqlite:///{(folder / 'events.db').resolve()}"
            client = stack.enter_context(api(folder / "artifacts", url))
            nightly = _nightly(store, folder / "artifacts", url, ranker_bag) if name == RETRAINED else None
            arms.append(Arm(name, client, nightly))
        t0 = time.perf_counter()
        run = run_loop(population, arms, settings, catalogue=catalogue, start=start, show_progress=show_progress)
        logger.info(
            "seed %d: %d visits per arm in %.0f s", settings.seed, len(run.visits) // 2, time.perf_counter() - t0
        )
        return run


def _nightly(store: Path, artifacts: Path, database_url: str, ranker_bag: int | None) -> Callable[[], str]:
    return lambda: nightly_retrain(store, artifacts, database_url, ranker_bag=ranker_bag)
