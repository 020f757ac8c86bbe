"""FigureConfig: every setting of model/figures.py (tools/make_figures.py's flags), checked
in one place when made, and FigureError, the one error the figures raise.

`train_flags` takes the extra training settings of every run either as a mapping of
TrainConfig's fields or as the text a command line gives, train.py-style: "--epochs=2
--z_dim 32 --noflip" (parse_train_flags turns it into TrainConfig's fields). A
bad value is a FigureError naming the setting in backticks.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
from collections.abc import Mapping
from typing import Any

from facevae.model import console
from facevae.model.config import TrainConfig, TrainError
from facevae.model.networks import ConfigError
from facevae.model.vae import MAX_SEED

# The extra KL weights of the table: x0.25 and x4 the demo's kl_weight (1.3e-3, TrainConfig's
# default); keep them around it when the demo changes.
KL_WEIGHTS = (3.25e-4, 5.2e-3)
MAX_KL_WEIGHTS = 8
MAX_JOBS = 16  # worker processes, each with its own TensorFlow (~1 GB)
# Settings the figures give each run themselves, and settings of a command line rather than
# of a run: `train_flags` may give neither.
OWN_SETTINGS = ("data_dir", "mode", "kl_weight")
NOT_SETTINGS = ("demo", "workdir", "overwrite", "resume_step", "benchmark_steps")


class FigureError(ValueError):
    """A setting, dataset or run that stops the figures: one line naming it and the fix.

    Made from another error (`cause`), it keeps the fields console.one_line reads (the
    dataset to prepare again, the judge to train), so a command line adds that command."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        for name in ("data_dir", "reprepare", "judge_data_dir"):
            if hasattr(cause, name):
                setattr(self, name, getattr(cause, name))


@dataclasses.dataclass(frozen=True)
class FigureConfig:
    """Every setting of the figures; tools/make_figures.py's flags have the same names.

    `train_flags`: extra training settings for every run, TrainConfig's fields, either as a
    mapping or as train.py-style text ("--epochs=2 --z_dim=32"). Checked when made:
    FigureError names the first bad setting.
    """

    out_dir: str = "docs"
    runs_dir: str = os.path.join("runs", "figures")
    data_dir: str | None = None  # None: the demo's synthetic faces
    train_flags: str | Mapping[str, Any] = ""
    kl_weights: tuple[float | str, ...] = KL_WEIGHTS
    seed: int = 0
    jobs: int = 2
    overwrite: bool = False
    # Filled from train_flags: the TrainConfig fields every run gets.
    train_settings: dict[str, Any] = dataclasses.field(init=False, compare=False)

    def __post_init__(self) -> None:
        given = self.train_flags
        settings = dict(given) if isinstance(given, Mapping) else parse_train_flags(given)
        for name in settings:
            if name in OWN_SETTINGS or name in NOT_SETTINGS:
                raise FigureError(
                    f"`train_flags`: {name} is set by this tool; use `data_dir`, `runs_dir` "
                    "or `kl_weights`, or train that run yourself"
                )
        object.__setattr__(self, "train_settings", settings)
        try:
            TrainConfig.demo(data_dir="-", **settings).check()
        except (TrainError, ConfigError, TypeError) as e:
            raise FigureError(f"`train_flags`: {console.short(e, 200)}") from None
        object.__setattr__(self, "kl_weights", _kl_weights(self.kl_weights))
        for name, low, high in (("jobs", 1, MAX_JOBS), ("seed", 0, MAX_SEED)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise FigureError(f"`{name}`={console.short(value)}: give a whole number")
            if value < low:
                raise FigureError(f"`{name}`={value}: give {low} or more")
            if value > high:
                raise FigureError(f"`{name}`={value}: give at most {high:,}")


def _kl_weights(given: Any) -> tuple[float, ...]:
    texts = [str(v) for v in ((given,) if isinstance(given, (str, float, int)) else given)]
    shown = console.short(",".join(texts))
    if len(texts) > MAX_KL_WEIGHTS:
        raise FigureError(f"`kl_weights`: {len(texts)} values, at most {MAX_KL_WEIGHTS}")
    weights: list[float] = []
    for text in texts:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise FigureError(
                f"`kl_weights`={shown}: {console.short(text, 20)!r} is not a positive number; "
                f"give e.g. {','.join(f'{w:g}' for w in KL_WEIGHTS)}"
            )
        if f"{value:g}" in [f"{w:g}" for w in weights]:
            raise FigureError(f"`kl_weights`={shown}: {console.short(text, 20)} is given twice")
        weights.append(value)
    return tuple(weights)


_FIELDS = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def parse_train_flags(text: str) -> dict[str, Any]:
    """Training settings as a command line gives them ("--epochs=2 --z_dim 32 --flip
    --noflip", dashes optional before name=value) as TrainConfig's fields and values;
    FigureError naming the first that is not one."""
    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise FigureError(
            f"`train_flags`={console.short(text)}: {e}; quote it as one string"
        ) from None
    settings: dict[str, Any] = {}
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        name, has_value, value = token.lstrip("-").partition("=")
        if not token.startswith("-") and not has_value:
            raise FigureError(
                f"`train_flags`={console.short(text)}: {console.short(token, 40)} is not a "
                "name=value setting"
            )
        if name in OWN_SETTINGS or name in NOT_SETTINGS:
            raise FigureError(
                f"`train_flags`: {console.short(token, 40)} is set by this tool; use "
                "`data_dir`, `runs_dir` or `kl_weights`, or train that run yourself"
            )
        if name not in _FIELDS and name.startswith("no") and _FIELDS.get(name[2:]) == "bool":
            name, has_value, value = name[2:], "=", "false"
        kind = _FIELDS.get(name)
        if kind is None:
            raise FigureError(
                f"`train_flags`: {console.short(token, 40)} is not a training setting (one "
                "of TrainConfig's fields)"
            )
        if not has_value:
            if kind == "bool":
                value = "true"
            elif position < len(tokens):
                value, position = tokens[position], position + 1
            else:
                raise FigureError(f"`train_flags`: {console.short(token, 40)} has no value")
        settings[name] = _setting(kind, value, token)
    return settings


def _setting(kind: str, value: str, token: str) -> Any:
    """One value of `train_flags` as its TrainConfig field's type."""
    shown = console.short(token if "=" in token else f"{token}={value}", 60)
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return {"true": True, "1": True, "false": False, "0": False}[value.lower()]
        if kind.startswith("tuple"):
            return tuple(int(v) for v in value.split(","))
        return value
    except (ValueError, KeyError):
        example = {"int": "a whole number", "float": "a number", "bool": "true or false"}
        rule = example.get(kind, "comma-separated integers, e.g. 32,64,128")
        raise FigureError(f"`train_flags`: {shown}: give {rule}") from None
