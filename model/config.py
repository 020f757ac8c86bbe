"""A run's settings: TrainConfig (every training setting, train.py's flags) and RunConfig
(what config.json holds: those settings and the model's), each checked in one place.

TrainConfig.check() checks the settings of the run itself (data, optimisation, devices,
outputs) before any work; the model's own settings are checked once, by ModelConfig and
NetworkConfig, when `model_config` builds them for the dataset's image shape. Every problem
is a TrainError naming the setting in backticks (`batch_size`), which a command line shows
as its flag (--batch_size).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from facevae.model.networks import ConfigError, NetworkConfig
from facevae.model.vae import MAX_SEED, ModelConfig

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
LR_SCHEDULES = ("constant", "cosine")
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}  # keras compile's values
CACHE_MODES = ("auto", "memory", "none", "disk:<path>")
MAX_STEPS = 2**40  # steps, epochs and sizes beyond this are typos, not plans
MAX_SHUFFLE_BUFFER = 1 << 24
MAX_LOGICAL_CPUS = 64

# The demo: 300 steps that reach ~24 dB test PSNR in ~1.5 minutes on 2 CPU cores (the KL
# weight is the default, the original recipe's).
DEMO_SETTINGS = {
    "z_dim": 64,
    "filters": (32, 64, 128, 256),
    "batch_size": 64,
    "learning_rate": 2e-3,
    "lr_schedule": "cosine",
    "epochs": 6,
    "checkpoint_every_steps": 200,
}


class TrainError(ValueError):
    """Training cannot go on as asked; the message is one line naming the cause and the fix."""


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(values: Any) -> str:
    return _short(",".join(str(v) for v in values))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run. train.py's flags have the same names and defaults.

    config.json stores it under "flags"; `check()` says what cannot run before any work.
    """

    # Data.
    data_dir: str = ""
    cache: str = "auto"  # auto, memory, none or disk:<path>
    shuffle_buffer: int = 10_000
    flip: bool = False
    # Model (checked by ModelConfig and NetworkConfig, see model_config).
    z_dim: int = 256
    filters: tuple[int, ...] = (32, 64, 128, 256)
    norm: str = "batch"
    dense_units: int = 0
    mode: str = "vae"
    kl_weight: float = ModelConfig.kl_weight
    kl_warmup_steps: int = 0
    reconstruction_loss: str = "bce"
    # Optimisation.
    batch_size: int = 128  # global, split across replicas
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": to 0 at the last of epochs * steps_per_epoch
    epochs: int = 10
    steps_per_epoch: int = 0  # 0: one pass over the train split
    seed: int = 0
    # Devices and speed.
    strategy: str = "auto"
    logical_cpus: int = 0
    mixed_precision: str = "none"
    jit_compile: str = "auto"  # auto (XLA on GPU/TPU, not on CPU), true or false
    steps_per_execution: int = 1
    # Outputs.
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    sample_every_epochs: int = 1
    eval_every_epochs: int = 1
    log_every_steps: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.filters, (list, tuple)):
            object.__setattr__(self, "filters", tuple(self.filters))
        if isinstance(self.jit_compile, bool):  # config.json of earlier versions
            object.__setattr__(self, "jit_compile", str(self.jit_compile).lower())

    @classmethod
    def demo(cls, **changes: Any) -> TrainConfig:
        """The demo's settings (DEMO_SETTINGS), then `changes`."""
        return cls(**{**DEMO_SETTINGS, **changes})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict such as config.json's "flags"; other keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["filters"] = list(self.filters)
        return values

    def check(self) -> None:
        """Raises TrainError naming the first setting of the run that cannot work, and the fix.

        The model's settings (z_dim, filters, norm, ...) are checked by model_config.
        """
        minimum = {"steps_per_epoch": 0, "logical_cpus": 0, "seed": 0}
        maximum = {
            "seed": MAX_SEED,
            "shuffle_buffer": MAX_SHUFFLE_BUFFER,
            "logical_cpus": MAX_LOGICAL_CPUS,
        }
        model_fields = {"z_dim", "dense_units", "kl_warmup_steps"}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and f.name not in model_fields:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TrainError(f"`{f.name}`={_short(value)}: give a whole number")
                low, high = minimum.get(f.name, 1), maximum.get(f.name, MAX_STEPS)
                if not low <= value <= high:
                    raise TrainError(f"`{f.name}`={value}: give a number in {low}..{high:,}")
            if f.type == "bool" and not isinstance(value, bool):
                raise TrainError(f"`{f.name}`={_short(value)}: give true or false")
            if f.type == "str" and not isinstance(value, str):
                raise TrainError(f"`{f.name}`={_short(value)}: give text")
        rate = self.learning_rate
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not (math.isfinite(rate) and rate > 0)
        ):
            raise TrainError(f"`learning_rate`={_short(rate)}: give a finite number > 0")
        for name, choices in (
            ("strategy", STRATEGIES),
            ("mixed_precision", MIXED_PRECISION),
            ("jit_compile", tuple(JIT_COMPILE)),
            ("lr_schedule", LR_SCHEDULES),
        ):
            if getattr(self, name) not in choices:
                raise TrainError(
                    f"`{name}`={_short(getattr(self, name))}: use one of {', '.join(choices)}"
                )
        if self.cache not in ("auto", "memory", "none") and not (
            self.cache.startswith("disk:") and len(self.cache) > 5
        ):
            raise TrainError(f"`cache`={_short(self.cache)}: use {', '.join(CACHE_MODES)}")
        if not self.data_dir:
            raise TrainError("`data_dir` is required: the folder of a prepared dataset")
        # The model's own settings, on the recipe's image shape: the dataset's is checked
        # again by model_config once it is read (filters must divide its height and width).
        self.model_config(None)

    def model_config(self, image_shape: tuple[int, int, int] | None) -> ModelConfig:
        """The VAE's settings for images of `image_shape` (None: the recipe's 96x96x3);
        TrainError naming the setting if they cannot make a model."""
        values: dict[str, Any] = {}
        try:
            network = NetworkConfig(
                **({"image_shape": image_shape} if image_shape else {}),
                filters=self.filters,
                z_dim=self.z_dim,
                norm=self.norm,
                dense_units=self.dense_units,
            )
            values = {
                "network": network,
                "mode": self.mode,
                "kl_weight": self.kl_weight,
                "kl_warmup_steps": self.kl_warmup_steps,
                "reconstruction_loss": self.reconstruction_loss,
                "seed": self.seed,
            }
            return ModelConfig(**values)
        except ConfigError as e:
            if e.field == "filters" and image_shape is None and "divisible" in e.problem:
                return ModelConfig()  # depends on the dataset's shape: checked with it
            shown = _join(e.value) if isinstance(e.value, (tuple, list)) else _short(e.value)
            raise TrainError(f"`{e.field}`={shown}: {e.problem}") from None
        except TypeError as e:  # e.g. filters that are not a list
            raise TrainError(f"{_short(e)}") from None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """config.json: the run's settings ("flags") and its model's ("model")."""

    flags: TrainConfig
    model: ModelConfig

    def to_dict(self) -> dict[str, Any]:
        return {"flags": self.flags.to_dict(), "model": self.model.to_dict()}
