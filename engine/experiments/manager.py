"""The experiment registry, kept in the event store's database so that the API and the CLI see the same ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.experiments.definition import Experiment, check_limits, experiment_from_dict
from engine.experiments.eventstore import EventStore


class UnknownExperiment(KeyError):
    """No experiment has this name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ExperimentExists(ValueError):
    """An experiment with this name already exists."""


class ExperimentLocked(ValueError):
    """The change would contradict what exposed units already saw (their unit, salt or variant)."""


class ExperimentRegistry:
    """Create, update, read and list experiments stored in ``store``."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def create(self, experiment: Experiment) -> Experiment:
        check_limits(experiment)
        try:
            self.store.save_experiment(experiment.name, experiment.to_dict(), create=True)
        except KeyError as exc:
            raise ExperimentExists(
                f"an experiment named {experiment.name!r} already exists; update it (PUT) or pick another name"
            ) from exc
        return experiment

    def update(self, experiment: Experiment) -> Experiment:
        """Replace a stored experiment. Once units were exposed, its unit and salt are fixed and its variants
        can be re-weighted or added to but not removed (exposed units keep their variants regardless)."""
        check_limits(experiment)
        old = self.get(experiment.name)
        exposed = self.store.count_exposures(experiment.name)
        if exposed:
            if experiment.unit != old.unit:
                raise ExperimentLocked(
                    f"experiment {old.name!r} already has exposures by {old.unit}; its unit cannot change "
                    "(start a new experiment instead)"
                )
            if experiment.salt != old.salt:
                raise ExperimentLocked(
                    f"experiment {old.name!r} already has exposures; changing its salt would reshuffle new units "
                    "against exposed ones (start a new experiment instead)"
                )
            removed = sorted(set(exposed) - set(experiment.variant_names))
            if removed:
                raise ExperimentLocked(
                    f"experiment {old.name!r}: variants {removed} have exposed units and cannot be removed; "
                    "set a small weight instead"
                )
        self.store.save_experiment(experiment.name, experiment.to_dict(), create=False)
        return experiment

    def get(self, name: str) -> Experiment:
        data = self.store.load_experiment(name)
        if data is None:
            raise UnknownExperiment(f"no experiment named {name!r}; list them with GET /v1/experiments")
        return experiment_from_dict(data)

    def list(self) -> list[Experiment]:
        return [experiment_from_dict(d) for d in self.store.load_experiments()]


def create_experiment(store: EventStore, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``data`` with the strict loader and store it as a new experiment; return its resolved form."""
    return ExperimentRegistry(store).create(experiment_from_dict(data)).to_dict()


def update_experiment(store: EventStore, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Replace experiment ``name`` with ``data`` (whose name, if given, must match)."""
    if "name" in data and data["name"] != name:
        raise ValueError(f"the body names experiment {data['name']!r} but the path names {name!r}")
    return ExperimentRegistry(store).update(experiment_from_dict({**data, "name": name})).to_dict()


def list_experiments(store: EventStore) -> list[dict[str, Any]]:
    return [e.to_dict() for e in ExperimentRegistry(store).list()]
