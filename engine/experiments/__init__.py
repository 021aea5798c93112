"""A/B experiments: definitions, assignment, exposure and event logging, statistics, reports, a simulator.

Integration points (what serving, the CLI and the demo page call):

- ``assign(experiment, unit_id) -> str | None``: the pure PlanOut-style rule (sha256 of salt and unit):
  the variant name, or None when the unit is outside the traffic share. Ignores dates and recorded
  assignments; serving calls ``record_exposure`` instead.
- ``record_exposure(store, experiment, unit_id, *, ts, user_id, session_id, bundle_version, image_ids,
  exposure_id) -> str | None``: records that the unit saw its variant's images and returns the variant to
  show: the recorded one for a unit exposed before (weights, traffic or salt may have changed since), the
  rule's choice for a new unit, None outside [start, stop) or the traffic share (show the default).
  ``unit_id_for(experiment, user_id=..., session_id=...)`` gives the unit id; ``ExperimentRegistry(store)
  .get(name)`` the experiment; ``Experiment.variant(name).strategy`` ("popular" | "personalised") what to show.
- ``EventStore(url).add_events([Event(...)])`` → ``AddResult`` (per event: new or duplicate), and
  ``EventStore.session_events(session_id)`` → the session's view / add_to_cart / purchase events in time
  order (for session fold-in). Both live in ``engine.experiments.eventstore``.
- ``experiment_report(store, name, *, as_of=None) -> dict`` (JSON-ready), ``render_report(report) -> str``,
  ``chart_png(report) -> bytes`` / ``write_chart(report, path)``.
- The HTTP-driven simulation: ``engine.experiments.shoppers.run_shoppers(shoppers, visit=..., sink=...,
  show=..., variants=...)`` with ``make_shoppers(load_tastes(store_dir), ...)``; ``visit`` calls the image-set
  endpoint, ``sink`` posts to ``/v1/events``, ``show(unit_id, variant)`` fetches a given variant's set
  (for the true lift). See docs/EXPERIMENTS.md.
"""

from engine.experiments.assignment import assign, bucket, in_traffic, record_exposure, record_exposures, unit_id_for
from engine.experiments.definition import (
    Experiment,
    Variant,
    experiment_from_dict,
    load_experiment_file,
)
from engine.experiments.manager import (
    ExperimentExists,
    ExperimentLocked,
    ExperimentRegistry,
    UnknownExperiment,
    create_experiment,
    list_experiments,
    update_experiment,
)
from engine.experiments.report import chart_png, experiment_chart, experiment_report, render_report, write_chart

__all__ = [
    "Experiment",
    "ExperimentExists",
    "ExperimentLocked",
    "ExperimentRegistry",
    "UnknownExperiment",
    "Variant",
    "assign",
    "bucket",
    "chart_png",
    "create_experiment",
    "experiment_chart",
    "experiment_from_dict",
    "experiment_report",
    "in_traffic",
    "list_experiments",
    "load_experiment_file",
    "record_exposure",
    "record_exposures",
    "render_report",
    "unit_id_for",
    "update_experiment",
    "write_chart",
]
