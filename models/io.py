"""Small helpers every component uses to save its frozen config next to its weights.

A component's folder holds ``config.json`` (its frozen config dataclass, read back strictly) and one
``<name>.safetensors`` file per network: never a pickle for what the API loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

T = TypeVar("T")
M = TypeVar("M", bound="nn.Module")


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Build a frozen config dataclass from a dict, refusing unknown keys (a typo must fail loudly).

    Lists are turned back into tuples where the field is declared as a tuple, since JSON has no tuples, and a
    field declared as a config dataclass (a training config's ``privacy``) is built from its dict the same way.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown} for {cls.__name__}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        origin = typing.get_origin(hints.get(key))
        if isinstance(value, list) and (origin is tuple or hints.get(key) is tuple):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif isinstance(value, dict) and dataclasses.is_dataclass(hints.get(key)):
            value = config_from_dict(hints[key], value, source=f"{source}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


def write_json(path: Path, data: Any, *, default: Any = str) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file.

    ``default`` turns values JSON does not know into ones it does (``str`` by default; ``float`` for reports
    full of numpy scalars)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=default)
        fh.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return json.loads(path.read_text())


def read_config(cls: type[T], directory: Path) -> T:
    """The component's ``config.json`` as a ``cls``, refusing unknown keys."""
    return config_from_dict(cls, read_json(Path(directory) / "config.json"), source=str(directory))


def save_module(module: nn.Module, config: Any, directory: Path, name: str) -> None:
    """Write ``config.json`` (the config that rebuilds ``module``) and ``<name>.safetensors`` (its state)."""
    from safetensors.torch import save_file  # torch only where weights are written: the JSON helpers stay light

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", config_to_dict(config))
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(directory / f"{name}.safetensors"))


def load_state(module: M, directory: Path, name: str, *, device: str = "cpu") -> M:
    """``module`` with the state of ``<name>.safetensors`` loaded strictly (every key, no other)."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(Path(directory) / f"{name}.safetensors"), device=device), strict=True)
    return module
