"""Deterministic assignment of units (users or sessions) to variants, PlanOut-style, and exposure recording.

The rule, for an experiment with salt ``s`` and a unit id ``u``::

    bucket(s, stage, u) = int(sha256(f"{s}.{stage}.{u}")[:15 hex digits]) mod 10000

    u is in the experiment  ⇔  bucket(s, "traffic", u) < ceil(traffic × 10000)
    u's variant             =  the first variant whose cumulative weight share × 10000 exceeds
                               bucket(s, "variant", u)

Two separate hashes make the traffic gate and the variant choice independent: raising ``traffic`` only
lets more units in (a unit's traffic bucket never changes) and never moves a unit between variants (its
variant bucket does not depend on traffic). Weights are relative; with weights (1, 1) each variant gets
5000 of the 10000 variant buckets.

On top of the pure rule, the first exposure of a unit is recorded (``assignments`` table) and every later
exposure reuses it, so even changing weights or salt later never reassigns a unit that was already exposed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime

from engine.experiments.definition import Experiment
from engine.experiments.eventstore import EventStore, ExposureIn, to_epoch

BUCKETS = 10_000


def bucket(salt: str, stage: str, unit_id: str) -> int:
    """The unit's bucket in [0, 10000) for one hashing stage ("traffic" or "variant")."""
    digest = hashlib.sha256(f"{salt}.{stage}.{unit_id}".encode()).hexdigest()
    return int(digest[:15], 16) % BUCKETS


def in_traffic(experiment: Experiment, unit_id: str) -> bool:
    """Whether the unit falls within the experiment's traffic share (independent of the variant hash)."""
    assert experiment.salt is not None  # Experiment.__post_init__ resolves a missing salt to the name
    return bucket(experiment.salt, "traffic", unit_id) < math.ceil(experiment.traffic * BUCKETS)


def variant_bounds(experiment: Experiment) -> list[int]:
    """Upper bucket bound (exclusive) of each variant, in variant order; the last is 10000."""
    total = sum(v.weight for v in experiment.variants)
    bounds, cumulative = [], 0.0
    for v in experiment.variants:
        cumulative += v.weight
        bounds.append(round(cumulative / total * BUCKETS))
    bounds[-1] = BUCKETS
    return bounds


def assign(experiment: Experiment, unit_id: str) -> str | None:
    """The variant the pure rule gives ``unit_id``, or None when the unit is outside the traffic share.

    This ignores recorded assignments and the experiment's dates; serving should call
    :func:`record_exposure`, which honours both.
    """
    if not in_traffic(experiment, unit_id):
        return None
    assert experiment.salt is not None  # Experiment.__post_init__ resolves a missing salt to the name
    b = bucket(experiment.salt, "variant", unit_id)
    for v, upper in zip(experiment.variants, variant_bounds(experiment), strict=True):
        if b < upper:
            return v.name
    raise AssertionError("unreachable: the last bound is 10000")


def unit_id_for(experiment: Experiment, *, user_id: str | None, session_id: str | None) -> str | None:
    """The id the experiment randomises on: the user id (unit "user") or the session id (unit "session")."""
    return user_id if experiment.unit == "user" else session_id


def record_exposure(
    store: EventStore,
    experiment: Experiment,
    unit_id: str,
    *,
    ts: datetime | float | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    bundle_version: str | None = None,
    image_ids: Sequence[str] = (),
    exposure_id: str | None = None,
) -> str | None:
    """Record that ``unit_id`` was shown its variant's images now (or at ``ts``); return the variant to show.

    Returns None, and records nothing, when ``ts`` is outside [start, stop) or the unit is outside the
    traffic share and was never exposed. A unit that was exposed before keeps its recorded variant, whatever
    the weights, traffic or salt are now. Repeating an ``exposure_id`` records it once.
    """
    exposure = ExposureIn(
        unit_id=unit_id,
        ts=to_epoch(ts),
        user_id=user_id,
        session_id=session_id,
        bundle_version=bundle_version,
        image_ids=tuple(image_ids),
        **({"exposure_id": exposure_id} if exposure_id is not None else {}),
    )
    return record_exposures(store, experiment, [exposure])[0]


def record_exposures(store: EventStore, experiment: Experiment, exposures: Sequence[ExposureIn]) -> list[str | None]:
    """Batch form of :func:`record_exposure` (one transaction); variants in input order."""
    running = [e for e in exposures if experiment.is_running(e.ts)]
    variants = store.record_exposures(experiment.name, running, lambda unit: assign(experiment, unit))
    by_position = iter(variants)
    return [next(by_position) if experiment.is_running(e.ts) else None for e in exposures]
