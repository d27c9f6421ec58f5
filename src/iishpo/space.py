"""The CNN hyperparameter search space of the paper, at one input resolution.

A configuration is a flat ``dict`` holding only the *active* hyperparameters: the
per-layer parameters ``conv_filters_i`` and ``fc_units_j`` exist only for the layers that
the configuration has. The number of convolutional layers is bounded by the resolution,
because every convolution is followed by 2x2 max pooling.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

Config = dict[str, Any]

FLOAT, INT, CATEGORICAL = "float", "int", "categorical"
KINDS = (FLOAT, INT, CATEGORICAL)

#: Hyperparameters shared by every architecture, in a fixed order.
GLOBAL_PARAMS = ("learning_rate", "batch_size", "l1", "l2", "filter_size", "n_conv", "n_fc")
#: Per-layer hyperparameters: name prefix -> the layer count that makes them active.
LAYER_PARAMS = {"conv_filters": "n_conv", "fc_units": "n_fc"}


@dataclass(frozen=True)
class Param:
    """One hyperparameter: a numeric range (optionally log-scaled) or a set of choices.

    ``active_if=(parent, i)`` makes the parameter exist only when ``config[parent] > i``.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    active_if: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == CATEGORICAL:
            if not self.choices:
                raise ValueError(f"{self.name}: a categorical parameter needs non-empty choices")
            return
        if self.low is None or self.high is None or not self.low <= self.high:
            raise ValueError(f"{self.name}: needs low <= high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: a log-scaled range needs low > 0, got {self.low}")

    def is_active(self, config: Mapping[str, Any]) -> bool:
        if self.active_if is None:
            return True
        parent, index = self.active_if
        return int(config[parent]) > index

    def contains(self, value: Any) -> bool:
        if self.kind == CATEGORICAL:
            return value in self.choices  # type: ignore[operator]
        if self.kind == INT and (isinstance(value, bool) or int(value) != value):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def sample(self, rng: random.Random) -> Any:
        if self.kind == CATEGORICAL:
            return rng.choice(self.choices)  # type: ignore[arg-type]
        assert self.low is not None and self.high is not None
        if self.kind == INT:
            if self.log:
                value = math.exp(rng.uniform(math.log(self.low - 0.5 + 1e-9), math.log(self.high + 0.5)))
                return int(min(max(round(value), self.low), self.high))
            return rng.randint(int(self.low), int(self.high))
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return min(max(value, self.low), self.high)  # exp(log(x)) may miss x by an ulp

    def clip(self, value: Any) -> Any:
        """The nearest value inside this parameter's domain."""
        if self.kind == CATEGORICAL:
            if value in self.choices:  # type: ignore[operator]
                return value
            numeric = [c for c in self.choices if isinstance(c, (int, float))]  # type: ignore[union-attr]
            if numeric and isinstance(value, (int, float)):
                return min(numeric, key=lambda c: abs(c - value))
            return self.choices[0]  # type: ignore[index]
        clipped = min(max(value, self.low), self.high)  # type: ignore[type-var]
        return round(clipped) if self.kind == INT else float(clipped)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == CATEGORICAL:
            out["choices"] = list(self.choices)  # type: ignore[arg-type]
        else:
            out.update(low=self.low, high=self.high, log=self.log)
        if self.active_if is not None:
            out["active_if"] = list(self.active_if)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Param:
        choices = data.get("choices")
        active_if = data.get("active_if")
        return cls(
            name=data["name"],
            kind=data["kind"],
            low=data.get("low"),
            high=data.get("high"),
            log=bool(data.get("log", False)),
            choices=tuple(choices) if choices is not None else None,
            active_if=(active_if[0], int(active_if[1])) if active_if is not None else None,
        )


def max_conv_layers(resolution: int, min_feature_size: int) -> int:
    """How many conv+pool blocks fit before the feature map drops below ``min_feature_size``."""
    layers = 0
    size = resolution
    while size // 2 >= min_feature_size:
        size //= 2
        layers += 1
    return layers


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of parameters; parents always precede the parameters they enable."""

    params: tuple[Param, ...]
    resolution: int
    min_feature_size: int = 2
    _by_name: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.params})
        if len(self._by_name) != len(self.params):
            raise ValueError("search space has duplicate parameter names")

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def max_conv(self) -> int:
        return int(self["n_conv"].high)  # type: ignore[arg-type]

    @property
    def max_fc(self) -> int:
        return int(self["n_fc"].high)  # type: ignore[arg-type]

    def active_params(self, config: Mapping[str, Any]) -> list[Param]:
        return [p for p in self.params if p.is_active(config)]

    def violations(self, config: Mapping[str, Any]) -> list[str]:
        """Every way in which ``config`` is not a valid point of this space."""
        problems = []
        for p in self.params:
            try:
                active = p.is_active(config)
            except KeyError:
                continue  # reported for the parent already
            if active and p.name not in config:
                problems.append(f"missing {p.name}")
            elif not active and p.name in config:
                problems.append(f"{p.name} given but inactive")
            elif active and not p.contains(config[p.name]):
                problems.append(f"{p.name}={config[p.name]!r} outside {_domain(p)}")
        problems += [f"unknown parameter {k}" for k in config if k not in self._by_name]
        return problems

    def validate(self, config: Mapping[str, Any]) -> None:
        problems = self.violations(config)
        if problems:
            raise ValueError(f"configuration {dict(config)} is not in the space: " + "; ".join(problems))

    def contains(self, config: Mapping[str, Any]) -> bool:
        return not self.violations(config)

    def sample(self, rng: random.Random) -> Config:
        config: Config = {}
        for p in self.params:
            if p.is_active(config):
                config[p.name] = p.sample(rng)
        return config

    def project(self, config: Mapping[str, Any], rng: random.Random | None = None) -> Config:
        """The nearest valid configuration: clip every value, sample newly active layers."""
        rng = rng or random.Random(0)
        out: Config = {}
        for p in self.params:
            if p.is_active(out):
                out[p.name] = p.clip(config[p.name]) if p.name in config else p.sample(rng)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "min_feature_size": self.min_feature_size,
            "params": [p.to_dict() for p in self.params],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls(
            params=tuple(Param.from_dict(p) for p in data["params"]),
            resolution=int(data["resolution"]),
            min_feature_size=int(data["min_feature_size"]),
        )

    def with_params(self, params: Sequence[Param]) -> SearchSpace:
        return replace(self, params=tuple(params))


def _domain(p: Param) -> str:
    if p.kind == CATEGORICAL:
        return f"choices {list(p.choices)}"  # type: ignore[arg-type]
    return f"[{p.low}, {p.high}]" + (" (log)" if p.log else "")


def _param_from_spec(name: str, spec: Mapping[str, Any], active_if: tuple[str, int] | None = None) -> Param:
    if "choices" in spec:
        return Param(name, CATEGORICAL, choices=tuple(spec["choices"]), active_if=active_if)
    kind = INT if name.startswith(("n_", "conv_filters", "fc_units")) else FLOAT
    low, high = spec["low"], spec["high"]
    if kind == INT:
        low, high = int(low), int(high)
    else:
        low, high = float(low), float(high)
    return Param(name, kind, low=low, high=high, log=bool(spec.get("log", False)), active_if=active_if)


def build_space(spec: Mapping[str, Any], resolution: int) -> SearchSpace:
    """The full (un-narrowed) space at ``resolution`` from a ``conf/space`` mapping.

    Raises ``ValueError`` when no architecture fits the resolution.
    """
    min_feature = int(spec["min_feature_size"])
    fit = max_conv_layers(resolution, min_feature)
    conv = dict(spec["n_conv"])
    if fit < int(conv["low"]):
        raise ValueError(
            f"resolution {resolution} px fits at most {fit} conv+pool layers "
            f"(feature maps must stay >= {min_feature} px), but the space asks for at least "
            f"{conv['low']}: use a larger resolution or lower space.n_conv.low"
        )
    conv["high"] = min(int(conv["high"]), fit)
    params = [
        _param_from_spec(name, conv if name == "n_conv" else spec[name]) for name in GLOBAL_PARAMS
    ]
    for prefix, parent in LAYER_PARAMS.items():
        count_high = int(conv["high"]) if parent == "n_conv" else int(spec[parent]["high"])
        params += [
            _param_from_spec(f"{prefix}_{i}", spec[prefix], active_if=(parent, i))
            for i in range(count_high)
        ]
    return SearchSpace(params=tuple(params), resolution=resolution, min_feature_size=min_feature)
