"""Which arm of a running experiment a shopper sees, with its exposure recorded; and what a shopper sees when the
event store cannot be consulted.

Which experiment: the one named by the request, else the running experiments in name order, the first whose
traffic share holds the unit; a unit is in at most one experiment per request (experiments do not overlap on the
image set). The unit's variant is the one recorded at its first exposure, else the assignment rule's; the
exposure (experiment, variant, bundle version, the image ids shown) is written before the set is returned, so a
report counts exactly the sets shoppers received.

When the store fails (the experiment list, the unit's assignment or the exposure write raises), the experiment
cannot be consulted, and what the unit would have seen is unknown: only the store knows a unit's recorded
variant, and the traffic share or weights may have changed since it was recorded. So no arm other than the
control may be shown: the shopper gets the **control arm's set** of the experiment that would apply (the one
named, else the first running one, from the experiments this process read last), whatever their variant;
nothing is recorded, and :attr:`ShownSet.experiment_skipped` says so. Only when no experiment is known to be
running (this process never read the list) is the default set shown, with the same note. docs/EXPERIMENTS.md
("When the event store fails") says what this means for a report.

The list of experiments may be reused for ``refresh_seconds`` (the API's ``VITRINE_EXPERIMENTS_REFRESH_SECONDS``,
1 s): reading it was a sixth of a cached set's CPU. An experiment created, changed or stopped elsewhere reaches
this process within that time; one written through this process (:meth:`ExperimentArms.changed`) at once. A
start or stop time is compared with each request's own time, never cached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlalchemy as sa

from engine.experiments.assignment import assign, record_exposure, unit_id_for
from engine.experiments.definition import Experiment
from engine.experiments.eventstore import EventStore, StoreUnavailable
from engine.experiments.manager import ExperimentRegistry, UnknownExperiment
from engine.serving.types import ImageSet, PopularSet, ShownSet

logger = logging.getLogger(__name__)

#: What the event store raises when it cannot answer (StoreUnavailable: connection lost, disk full, lock timeout).
STORE_ERRORS: tuple[type[Exception], ...] = (StoreUnavailable, sa.exc.SQLAlchemyError)

#: The set a variant shows: ``(experiment, variant name) -> set``.
VariantSet = Callable[[Experiment, str], ImageSet | PopularSet]


class ExperimentArms:
    """Experiments as serving meets them: which are running, which arm a unit sees, its exposure recorded.

    ``events`` None: experiments are off, every shopper gets the default set.
    """

    def __init__(self, events: EventStore | None, *, refresh_seconds: float = 0.0) -> None:
        if refresh_seconds < 0:
            raise ValueError(f"refresh_seconds must be >= 0; got {refresh_seconds}")
        self.events = events
        self.refresh_seconds = refresh_seconds
        self._seen: dict[str, Experiment] = {}  # the experiments last read, by name: what a failed read falls back on
        self._listed: tuple[float, list[Experiment]] | None = None  # (monotonic time, the whole list) last read

    def changed(self) -> None:
        """This process wrote an experiment: the next request reads the list again."""
        self._listed = None

    def _all(self, registry: ExperimentRegistry) -> list[Experiment]:
        listed, now = self._listed, time.monotonic()
        if listed is not None and now - listed[0] < self.refresh_seconds:
            return listed[1]
        experiments = registry.list()
        self._listed = (now, experiments)
        return experiments

    def running(self, at: float, name: str | None = None) -> list[Experiment]:
        """The experiment ``name`` (UnknownExperiment if there is none) or every experiment, running at ``at``."""
        if self.events is None:
            if name is not None:
                raise UnknownExperiment(f"no experiment named {name!r}: the event store is unavailable")
            return []
        registry = ExperimentRegistry(self.events)
        if name is not None:
            experiments = [registry.get(name)]
            self._seen = {**self._seen, name: experiments[0]}
        else:
            experiments = self._all(registry)
            self._seen = {e.name: e for e in experiments}
        return [e for e in experiments if e.is_running(at)]

    def shown_set(
        self,
        *,
        user_id: str,
        session_id: str | None,
        at: float,
        name: str | None,
        exposure_id: str,
        variant_set: VariantSet,
        default: Callable[[], ImageSet],
    ) -> ShownSet:
        """The set to show at ``at``: the unit's arm of the experiment that applies, its exposure recorded; else
        ``default()``. When the store fails: the control arm's set, nothing recorded (module docstring)."""
        try:
            candidates = self.running(at, name)
        except STORE_ERRORS as exc:
            logger.error("experiments could not be read; no exposure is recorded: %s", exc)
            return self._unconsulted(at, name, user_id, session_id, variant_set, default)
        for exp in candidates:
            unit = unit_id_for(exp, user_id=user_id, session_id=session_id)
            if unit is None:
                continue
            try:
                shown = self._in_experiment(exp, unit, at, user_id, session_id, exposure_id, variant_set)
            except STORE_ERRORS as exc:
                logger.error("unit %s of %s: the event store failed, showing the control arm: %s", unit, exp.name, exc)
                return _control(exp, variant_set)
            if shown is not None:
                return shown
        return ShownSet(images=default())

    def _unconsulted(
        self,
        at: float,
        name: str | None,
        user_id: str,
        session_id: str | None,
        variant_set: VariantSet,
        default: Callable[[], ImageSet],
    ) -> ShownSet:
        """The experiments could not be read: the control arm of the one that applies, by the last ones read."""
        seen = self._seen
        if name is not None:
            known = [seen[name]] if name in seen else []
        else:
            known = sorted(seen.values(), key=lambda e: e.name)
        for exp in known:
            if exp.is_running(at) and unit_id_for(exp, user_id=user_id, session_id=session_id) is not None:
                return _control(exp, variant_set)
        return ShownSet(
            images=default(),
            experiment_skipped="the event store did not answer and no running experiment is known here: "
            "the default set is shown and no exposure recorded",
        )

    def _in_experiment(
        self,
        exp: Experiment,
        unit: str,
        ts: float,
        user_id: str,
        session_id: str | None,
        exposure_id: str,
        variant_set: VariantSet,
    ) -> ShownSet | None:
        """The unit's variant's set with its exposure recorded, or None when the unit is not in ``exp`` at ``ts``."""
        assert self.events is not None
        chosen = self.events.assignment(exp.name, unit) or assign(exp, unit)
        if chosen is None:
            return None
        shown = variant_set(exp, chosen)

        def record(shown: ImageSet | PopularSet, exposure: str | None) -> str | None:
            assert self.events is not None
            return record_exposure(
                self.events,
                exp,
                unit,
                ts=ts,
                user_id=user_id,
                session_id=session_id,
                bundle_version=shown.bundle_version,
                image_ids=[img.image_id for img in shown.images],
                exposure_id=exposure,
            )

        recorded = record(shown, exposure_id)
        if recorded is not None and recorded != chosen:
            # another worker recorded this unit's first exposure in between, with another variant
            # (the configuration changed meanwhile): show and record what it recorded
            logger.warning("unit %s of %s: recorded variant %s, not %s", unit, exp.name, recorded, chosen)
            shown = variant_set(exp, recorded)
            record(shown, None)
            chosen = recorded
        if recorded is None:  # not running any more at ``ts``: nothing recorded
            return None
        return ShownSet(images=shown, experiment=exp.name, variant=chosen, exposure_id=exposure_id)


def _control(exp: Experiment, variant_set: VariantSet) -> ShownSet:
    assert exp.control is not None  # Experiment.__post_init__ resolves it to the first variant
    return ShownSet(
        images=variant_set(exp, exp.control),
        experiment_skipped=f"the event store did not answer: experiment {exp.name!r} was not consulted, its "
        f"control arm {exp.control!r} is shown and no exposure recorded",
    )
