"""Precompute every known shopper's image set with a bundle, on Ray Data, into the store serving reads first.

``vitrine batch image-sets`` runs :func:`precompute_image_sets` after training and after each promotion (in
production: right after ``vitrine promote``, or ``vitrine promote --precompute``). The shoppers the bundle knows
(its embeddings' and its ranker's) form a Ray dataset; ``map_batches`` hands batches of them to a pool of
:class:`SetRenderer` actors, each of which loads the bundle once and renders its batches with
:func:`render_sets` (the Personaliser's own ``image_set``, so a stored set is the one a request would get); the
driver writes the entries to the :mod:`~engine.serving.precomputed_store` as they come, leaving out any shopper
erased meanwhile, then drops the entries of versions that neither this job nor the registry's CURRENT names.

Without ``ray_address`` a local Ray starts with one CPU per core of this machine (one actor per CPU, one torch
thread each); with it, the job joins that cluster, whose workers need vitrine installed and the artifacts folder
at the same path. The image key must be the API's (``VITRINE_IMAGE_KEY``, or the key file in the artifacts root),
or the stored ids do not verify and are not served.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm.auto import tqdm

from engine.artifacts.bundle import load_bundle
from engine.artifacts.registry import ArtifactRegistry
from engine.serving.config import PersonaliserConfig
from engine.serving.personaliser import Personaliser
from engine.serving.precomputed import SetParams, known_shoppers, stored_entry
from engine.serving.precomputed_store import PrecomputedStore, SqlitePrecomputedStore
from engine.serving.privacy import Identities

logger = logging.getLogger(__name__)

ONE_MILLION = 1_000_000


def job_config(params: SetParams, *, pngs: bool = False) -> PersonaliserConfig:
    """The Personaliser's settings in a render worker: serving's generation settings, caches of one set, and
    PNGs rendered only when the job stores them."""
    return PersonaliserConfig(
        max_set_size=max(params.n, PersonaliserConfig.max_set_size),
        max_neighbours=max(params.neighbours, PersonaliserConfig.max_neighbours),
        set_cache_size=1,
        cache_size=max(64, 2 * params.n),
        render_pngs=pngs,
    )


def render_sets(
    personaliser: Personaliser, shoppers: Iterable[str], params: SetParams, *, pngs: bool = False
) -> list[tuple[str, bytes]]:
    """(shopper, encoded entry) for each shopper: their set as a request without a session gets it, with the
    latent codes its ids refer to and, with ``pngs``, its images. The function a Ray worker runs, and a test."""
    out = []
    for shopper in shoppers:
        image_set = personaliser.image_set(
            shopper,
            params.n,
            neighbours=params.neighbours,
            classes=params.classes,
            in_stock_only=params.in_stock_only,
        )
        out.append((shopper, stored_entry(personaliser, image_set, pngs=pngs)))
    return out


class SetRenderer:
    """A Ray Data actor: loads the bundle once, then renders the batches of shoppers it is handed.

    Each output batch carries, per shopper, the entry, the seconds spent rendering it (wall clock, and the
    actor process's CPU time), and the seconds the actor took to load the bundle on its first batch (0 after), so
    the driver can tell work from set-up, and work from waiting for a CPU that other jobs hold."""

    def __init__(
        self, *, bundle_path: str, key: bytes, params: SetParams, pngs: bool = False, torch_threads: int = 1
    ) -> None:
        import torch

        torch.set_num_threads(torch_threads)
        started = time.perf_counter()
        self.params = params
        self.pngs = pngs
        self.personaliser = Personaliser(load_bundle(Path(bundle_path)), job_config(params, pngs=pngs), key=key)
        self._load_seconds = time.perf_counter() - started

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started, cpu_started = time.perf_counter(), time.process_time()
        rows = render_sets(self.personaliser, [str(s) for s in batch["shopper"]], self.params, pngs=self.pngs)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        n = len(rows)
        load = np.zeros(n)
        if n:
            load[0], self._load_seconds = self._load_seconds, 0.0
        return {
            "shopper": np.array([s for s, _ in rows], dtype=object),
            "entry": np.array([e for _, e in rows], dtype=object),
            "seconds": np.full(n, seconds / max(n, 1)),
            "cpu_seconds": np.full(n, cpu_seconds / max(n, 1)),
            "load_seconds": load,
        }


@dataclass(kw_only=True)
class BatchReport:
    """What a run did and how fast: sets written, and throughput per core, end to end and while rendering."""

    version: str
    store: str
    params: dict[str, Any]
    shoppers: int  # known to the bundle and not erased when the job started
    sets: int = 0  # entries written
    erased_meanwhile: int = 0  # entries of shoppers erased while the job ran: not written, or deleted after
    workers: int = 0  # render actors (one CPU each)
    wall_seconds: float = 0.0  # from the start of Ray to the last write and the pruning
    render_seconds: float = 0.0  # summed over the actors: rendering only
    render_cpu_seconds: float = 0.0  # the same in CPU time: what rendering costs on a machine nothing else uses
    load_seconds: float = 0.0  # summed over the actors: loading the bundle
    pruned: int = 0  # entries of other versions deleted
    ray: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        per_core_render = self.sets / self.render_seconds if self.render_seconds else 0.0
        per_core_wall = self.sets / (self.wall_seconds * self.workers) if self.wall_seconds else 0.0
        per_cpu = self.sets / self.render_cpu_seconds if self.render_cpu_seconds else 0.0
        return {
            "version": self.version,
            "store": self.store,
            "params": self.params,
            "shoppers": self.shoppers,
            "sets": self.sets,
            "erased_meanwhile": self.erased_meanwhile,
            "workers": self.workers,
            "wall_seconds": round(self.wall_seconds, 3),
            "render_seconds": round(self.render_seconds, 3),
            "bundle_load_seconds": round(self.load_seconds, 3),
            "sets_per_second": round(self.sets / self.wall_seconds, 3) if self.wall_seconds else 0.0,
            "sets_per_second_per_core": round(per_core_wall, 3),
            "render_sets_per_second_per_core": round(per_core_render, 3),
            "render_cpu_seconds": round(self.render_cpu_seconds, 3),
            "render_sets_per_cpu_second": round(per_cpu, 3),
            "core_hours_per_million_sets": round(ONE_MILLION / per_core_render / 3600, 2) if per_core_render else None,
            "cpu_hours_per_million_sets": round(ONE_MILLION / per_cpu / 3600, 2) if per_cpu else None,
            "hours_per_million_sets_on_these_workers": (
                round(ONE_MILLION / per_core_render / self.workers / 3600, 2) if per_core_render else None
            ),
            "pruned": self.pruned,
            "ray": self.ray,
        }

    def render(self) -> str:
        d = self.to_dict()
        lines = [
            f"bundle {self.version}: {self.sets} image sets written to {self.store} ({self.erased_meanwhile} of "
            f"shoppers erased meanwhile left out, {self.pruned} entries of other versions pruned)",
            f"  {self.workers} worker(s), {d['wall_seconds']:.1f} s end to end: {d['sets_per_second']:.2f} sets/s, "
            f"{d['sets_per_second_per_core']:.2f} sets/s per core",
            f"  rendering alone: {d['render_sets_per_second_per_core']:.2f} sets/s per core, "
            f"{d['render_sets_per_cpu_second']:.2f} sets per CPU-second (bundle loads {d['bundle_load_seconds']:.1f} s "
            "in all)",
        ]
        if d["core_hours_per_million_sets"] is not None and d["cpu_hours_per_million_sets"] is not None:
            lines.append(
                f"  1,000,000 shoppers: {d['core_hours_per_million_sets']:.1f} core-hours of rendering at this rate "
                f"({d['cpu_hours_per_million_sets']:.1f} CPU-hours), "
                f"{d['hours_per_million_sets_on_these_workers']:.1f} h on {self.workers} worker(s)"
            )
        return "\n".join(lines)


def _start_ray(ray_address: str | None, workers: int | None) -> tuple[bool, int]:
    """Connect to ``ray_address`` or start a local Ray (one CPU per core, or ``workers``) unless one is running;
    (whether this call started it, the CPUs the cluster has)."""
    import ray

    started = False
    if not ray.is_initialized():
        env = {"env_vars": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}}
        if ray_address:
            ray.init(address=ray_address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, runtime_env=env)
        started = True
    return started, int(ray.cluster_resources().get("CPU", 1))


def shoppers_to_render(personaliser: Personaliser, identities: Identities, limit: int | None = None) -> list[str]:
    """The known shoppers not erased since the bundle was trained (the register masks those), the first
    ``limit`` of them when given."""
    manifest = personaliser.bundle.manifest
    shoppers = [s for s in known_shoppers(personaliser) if identities.lookup_id(s, manifest) == s]
    return shoppers if limit is None else shoppers[:limit]


def precompute_image_sets(
    artifacts: Path,
    *,
    key: bytes,
    version: str | None = None,
    store: PrecomputedStore | None = None,
    params: SetParams | None = None,
    limit: int | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    batch_size: int = 16,
    pngs: bool = False,
    prune: bool = True,
    show_progress: bool = True,
) -> BatchReport:
    """Render the known shoppers' sets of bundle ``version`` (default: the serving one) into ``store`` (default:
    the SQLite file under ``artifacts``). ``key``: the API's image key. ``limit``: the first N shoppers only.
    ``workers``: render actors (default: every CPU of the cluster). ``pngs``: store the images' PNGs too.
    ``prune``: then delete the entries of versions other than this one and the registry's CURRENT."""
    params = params or SetParams()
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1; got {limit}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1; got {batch_size}")
    registry = ArtifactRegistry(artifacts)
    version = version or registry.current()
    if version is None:
        raise ValueError(f"no serving bundle under {artifacts}; give --version or promote one")
    store = store or SqlitePrecomputedStore.under(artifacts)
    identities = Identities(registry.root)
    planner = Personaliser(load_bundle(registry.path(version)), job_config(params), key=key)
    shoppers = shoppers_to_render(planner, identities, limit)
    manifest = planner.bundle.manifest
    del planner  # the workers load their own
    report = BatchReport(
        version=version,
        store=getattr(store, "where", type(store).__name__),
        params={"n": params.n, "neighbours": params.neighbours, "classes": params.classes, "pngs": pngs},
        shoppers=len(shoppers),
    )
    job_started, started = time.time(), time.perf_counter()
    if shoppers:
        ray_started, cpus = _start_ray(ray_address, workers)
        report.ray = {"address": ray_address or "local", "cpus": cpus, "start_seconds": time.perf_counter() - started}
        report.workers = max(1, min(workers or cpus, cpus, -(-len(shoppers) // batch_size)))
        try:
            rendered = _rendered(shoppers, registry.path(version), key, params, pngs, report.workers, batch_size)
            params_key = params.key(job_config(params))
            with tqdm(total=len(shoppers), desc="image sets", unit="set", disable=not show_progress) as bar:
                for batch in rendered.iter_batches(batch_size=max(batch_size, 64), batch_format="numpy"):
                    _write(cast(dict[str, np.ndarray], batch), store, version, params_key, identities, manifest, report)
                    bar.update(len(batch["shopper"]))
        finally:
            if ray_started:
                _stop_ray()
    # a shopper erased between a batch's check and its write: the register has them, so sweep once more
    erased = [s for s, when in identities.register.erased().items() if when >= job_started]
    report.erased_meanwhile += store.delete_shoppers(erased) if erased else 0
    if prune:
        report.pruned = store.prune({v for v in (version, registry.current()) if v})
    report.wall_seconds = time.perf_counter() - started
    logger.info("precomputed image sets: %s", report.to_dict())
    return report


def _rendered(
    shoppers: list[str], bundle_path: Path, key: bytes, params: SetParams, pngs: bool, workers: int, batch_size: int
) -> Any:
    """The Ray dataset of rendered entries: the shoppers in blocks, mapped by a pool of ``workers`` actors."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # the driver's bar counts what is written
    ds = ray.data.from_items([{"shopper": s} for s in shoppers], override_num_blocks=max(1, workers * 4))
    return ds.map_batches(
        SetRenderer,
        fn_constructor_kwargs={"bundle_path": str(bundle_path), "key": key, "params": params, "pngs": pngs},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )


def _stop_ray() -> None:
    import ray

    ray.shutdown()


def _write(
    batch: dict[str, np.ndarray],
    store: PrecomputedStore,
    version: str,
    params_key: str,
    identities: Identities,
    manifest: dict,
    report: BatchReport,
) -> None:
    """Write a batch of entries, leaving out shoppers erased since the job started (the register is re-read
    when it changes), and add its timings to ``report``."""
    entries = []
    for shopper, entry in zip(batch["shopper"], batch["entry"], strict=True):
        if identities.lookup_id(str(shopper), manifest) != str(shopper):
            report.erased_meanwhile += 1
            continue
        entries.append((str(shopper), params_key, bytes(entry)))
    report.sets += store.put_many(version, entries)
    report.render_seconds += float(np.sum(batch["seconds"]))
    report.render_cpu_seconds += float(np.sum(batch["cpu_seconds"]))
    report.load_seconds += float(np.sum(batch["load_seconds"]))
