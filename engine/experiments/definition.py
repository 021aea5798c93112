"""Experiment definitions: frozen, validated dataclasses and one strict JSON loader.

An experiment file looks like::

    {
      "name": "personalised-vs-popular",
      "unit": "user",
      "salt": "pvp-2024-05",
      "start": "2024-05-01T00:00:00Z",
      "stop": "2024-06-01T00:00:00Z",
      "traffic": 0.5,
      "conversion": "purchase",
      "variants": [
        {"name": "control", "weight": 1, "strategy": "popular", "description": "catalogue images by popularity"},
        {"name": "treatment", "weight": 1, "strategy": "personalised"}
      ]
    }

Unknown keys are errors, so a typo never becomes a silent new setting. The first variant is the control
unless ``control`` names another.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

UNITS: tuple[str, ...] = ("user", "session")
#: What a variant shows; the image-set endpoint maps each to a way of choosing images.
STRATEGIES: tuple[str, ...] = ("popular", "personalised")
CONVERSIONS: tuple[str, ...] = ("click", "add_to_cart", "purchase")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
#: Weights are relative; a bound keeps their sum finite (the variant's share of the buckets needs it).
MAX_WEIGHT = 1e6
#: The longest experiment: its report looks once a day, so a run of centuries would take the report down.
MAX_DAYS = 366
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One arm: its name, its share of the experiment's traffic (``weight``, relative to the other arms)
    and what it shows (``strategy``)."""

    name: str
    weight: float = 1.0
    strategy: str = "personalised"
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"variant name {self.name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit"
            )
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"variant {self.name!r}: weight must be a positive number; got {w!r}")
        object.__setattr__(self, "weight", float(w))
        if self.strategy not in STRATEGIES:
            raise ValueError(f"variant {self.name!r}: strategy must be one of {STRATEGIES}; got {self.strategy!r}")
        if not isinstance(self.description, str):
            raise ValueError(f"variant {self.name!r}: description must be a string")


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """An A/B (or A/B/n) test. See the module docstring for the JSON form and :mod:`engine.experiments.assignment`
    for how units are assigned.

    ``traffic`` is the share of units in the experiment, in (0, 1]; raising it only adds units.
    ``salt`` (default: the name) seeds the assignment hashes: a new salt reshuffles units that were not yet
    exposed. ``conversion`` is the event that counts as converting. ``msprt_tau`` is the mixing standard
    deviation of the always-valid test on the absolute-lift scale (None: 50% of the pooled conversion rate,
    see docs/EXPERIMENTS.md).
    """

    name: str
    variants: tuple[Variant, ...]
    start: datetime
    stop: datetime
    unit: str = "user"
    salt: str | None = None
    traffic: float = 1.0
    conversion: str = "purchase"
    control: str | None = None
    description: str = ""
    msprt_tau: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"experiment name {self.name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit"
            )
        variants = tuple(self.variants)
        if len(variants) < 2 or not all(isinstance(v, Variant) for v in variants):
            raise ValueError(f"experiment {self.name!r} needs at least two variants; got {len(variants)}")
        names = [v.name for v in variants]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"experiment {self.name!r}: variant names must be unique; repeated {duplicated}")
        object.__setattr__(self, "variants", variants)
        if self.unit not in UNITS:
            raise ValueError(f"experiment {self.name!r}: unit must be one of {UNITS}; got {self.unit!r}")
        salt = self.name if self.salt is None else self.salt
        if not isinstance(salt, str) or not salt:
            raise ValueError(f"experiment {self.name!r}: salt must be a non-empty string; got {self.salt!r}")
        object.__setattr__(self, "salt", salt)
        for attr in ("start", "stop"):
            moment = getattr(self, attr)
            if not isinstance(moment, datetime):
                raise ValueError(f"experiment {self.name!r}: {attr} must be a datetime; got {moment!r}")
            if moment.tzinfo is None:
                raise ValueError(
                    f"experiment {self.name!r}: {attr} needs a time zone (write e.g. 2024-05-01T00:00:00Z)"
                )
            try:
                object.__setattr__(self, attr, moment.astimezone(UTC))
            except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: no UTC date-time
                raise ValueError(f"experiment {self.name!r}: {attr} {moment.isoformat()} is out of range") from None
        if not self.start < self.stop:
            raise ValueError(
                f"experiment {self.name!r}: start ({self.start.isoformat()}) must come before stop "
                f"({self.stop.isoformat()})"
            )
        t = self.traffic
        if isinstance(t, bool) or not isinstance(t, int | float) or not (0 < t <= 1):
            raise ValueError(f"experiment {self.name!r}: traffic must be in (0, 1]; got {t!r}")
        object.__setattr__(self, "traffic", float(t))
        if self.conversion not in CONVERSIONS:
            raise ValueError(
                f"experiment {self.name!r}: conversion must be one of {CONVERSIONS}; got {self.conversion!r}"
            )
        control = names[0] if self.control is None else self.control
        if control not in names:
            raise ValueError(f"experiment {self.name!r}: control {control!r} is not one of the variants {names}")
        object.__setattr__(self, "control", control)
        tau = self.msprt_tau
        if tau is not None and (
            isinstance(tau, bool) or not isinstance(tau, int | float) or not math.isfinite(tau) or tau <= 0
        ):
            raise ValueError(f"experiment {self.name!r}: msprt_tau must be a positive number or null; got {tau!r}")
        if not isinstance(self.description, str):
            raise ValueError(f"experiment {self.name!r}: description must be a string")

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"experiment {self.name!r} has no variant {name!r}; it has {list(self.variant_names)}")

    def is_running(self, at: datetime | float) -> bool:
        """Whether ``at`` (a datetime or UTC epoch seconds) lies in [start, stop)."""
        ts = at.timestamp() if isinstance(at, datetime) else float(at)
        return self.start.timestamp() <= ts < self.stop.timestamp()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what :func:`experiment_from_dict` reads)."""
        return {
            "name": self.name,
            "description": self.description,
            "unit": self.unit,
            "salt": self.salt,
            "start": _iso(self.start),
            "stop": _iso(self.stop),
            "traffic": self.traffic,
            "conversion": self.conversion,
            "control": self.control,
            "msprt_tau": self.msprt_tau,
            "variants": [
                {"name": v.name, "weight": v.weight, "strategy": v.strategy, "description": v.description}
                for v in self.variants
            ],
        }


def check_limits(experiment: Experiment) -> None:
    """The limits a new or changed experiment keeps (one stored before them still loads): weights of at most
    :data:`MAX_WEIGHT` and a run of at most :data:`MAX_DAYS` days. ValueError says which is broken."""
    heavy = [v.name for v in experiment.variants if v.weight > MAX_WEIGHT]
    if heavy:
        raise ValueError(f"experiment {experiment.name!r}: variants {heavy} weigh more than {MAX_WEIGHT:g}")
    if (experiment.stop - experiment.start).total_seconds() > MAX_DAYS * 86_400:
        raise ValueError(f"experiment {experiment.name!r} lasts more than {MAX_DAYS} days; split it into shorter ones")


_EXPERIMENT_KEYS = frozenset(
    {
        "name",
        "description",
        "unit",
        "salt",
        "start",
        "stop",
        "traffic",
        "conversion",
        "control",
        "msprt_tau",
        "variants",
    }
)
_REQUIRED = frozenset({"name", "start", "stop", "variants"})
_VARIANT_KEYS = frozenset({"name", "weight", "strategy", "description"})


def experiment_from_dict(data: Mapping[str, Any]) -> Experiment:
    """The strict loader: unknown or missing keys are errors that name the key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"an experiment must be a JSON object; got {type(data).__name__}")
    unknown = sorted(set(data) - _EXPERIMENT_KEYS)
    if unknown:
        raise ValueError(f"unknown experiment keys {unknown}; allowed: {sorted(_EXPERIMENT_KEYS)}")
    missing = sorted(_REQUIRED - set(data))
    if missing:
        raise ValueError(f"the experiment lacks the keys {missing}")
    raw_variants = data["variants"]
    if not isinstance(raw_variants, list):
        raise ValueError("variants must be a list of objects like {'name': 'control', 'weight': 1}")
    variants = []
    for i, v in enumerate(raw_variants):
        if not isinstance(v, Mapping):
            raise ValueError(f"variants[{i}] must be an object; got {v!r}")
        bad = sorted(set(v) - _VARIANT_KEYS)
        if bad:
            raise ValueError(f"variants[{i}]: unknown keys {bad}; allowed: {sorted(_VARIANT_KEYS)}")
        if "name" not in v:
            raise ValueError(f"variants[{i}] lacks a name")
        variants.append(Variant(**v))
    values = {k: v for k, v in data.items() if k != "variants"}
    for key in ("start", "stop"):
        values[key] = _parse_time(key, values[key])
    return Experiment(**values, variants=tuple(variants))


def load_experiment_file(path: Path) -> Experiment:
    """Read one experiment from a JSON file (see the module docstring)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    return experiment_from_dict(data)


def _parse_time(key: str, value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{key} must be an ISO 8601 date-time string such as 2024-05-01T00:00:00Z; got {value!r}")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key} must be ISO 8601, such as 2024-05-01T00:00:00Z; got {value!r}") from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
