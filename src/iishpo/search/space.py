"""The hyperparameter search space: declared in ``conf/space/*.yaml``, built per resolution.

A ``conf/space`` mapping declares every hyperparameter once, by name::

    learning_rate: {type: float, low: 1.0e-4, high: 0.3, log: true}
    batch_size: {type: categorical, choices: [16, 32, 64]}
    n_conv: {type: int, low: 1, high: 6}
    conv_filters: {type: int, low: 8, high: 256, log: true, per_layer_of: n_conv}
    resolution_bound: {param: n_conv, min_feature_size: 2}

``per_layer_of`` makes a parameter exist once per layer (``conv_filters_0``,
``conv_filters_1``, ...) and only for the layers a configuration has; the parameter it
names is a *layer count*. ``resolution_bound`` (the one key that is not a parameter) caps
a layer count by the input resolution: each such layer halves the feature map (2x2
pooling) and the last map keeps at least ``min_feature_size`` px per side.
:func:`parse_space` checks a mapping and :meth:`SpaceSpec.at` builds the
:class:`SearchSpace` of one resolution; nothing else in the package knows the names.

A configuration is a flat ``dict`` holding only the *active* hyperparameters.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

Config = dict[str, Any]

FLOAT, INT, CATEGORICAL = "float", "int", "categorical"
KINDS = (FLOAT, INT, CATEGORICAL)

#: the key of a ``conf/space`` mapping that is not a parameter
RESOLUTION_BOUND = "resolution_bound"
#: the keys a parameter declaration may have, by type
DECLARATION_KEYS = {
    FLOAT: ("type", "low", "high", "log", "per_layer_of"),
    INT: ("type", "low", "high", "log", "per_layer_of"),
    CATEGORICAL: ("type", "choices", "per_layer_of"),
}
RESOLUTION_BOUND_KEYS = ("param", "min_feature_size")


def layer_name(name: str, layer: int) -> str:
    """The name of a per-layer parameter's instance for layer ``layer`` (from 0)."""
    return f"{name}_{layer}"


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
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind == INT and int(value) != value:
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

    def unit_bounds(self) -> tuple[float, float]:
        """A numeric range on the scale it is sampled on (log where the parameter has one);
        an integer's range widened by just under half a step each side, so that its end
        points own as much of it as the values between."""
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        if self.kind == INT:
            low, high = low - 0.5 + 1e-9, high + 0.5 - 1e-9
        return self._scaled(low), self._scaled(high)

    def to_unit(self, value: float) -> float:
        """Where ``value`` lies in :meth:`unit_bounds`: 0 at the low end, 1 at the high one,
        so that steps there are alike for every numeric parameter. Needs a range of width."""
        low, high = self.unit_bounds()
        return (self._scaled(value) - low) / (high - low)

    def from_unit(self, u: float) -> Any:
        """The value at ``u`` (clamped to [0, 1]) of :meth:`unit_bounds`: the inverse of
        :meth:`to_unit`, rounded for an integer."""
        low, high = self.unit_bounds()
        raw = self._unscaled(low + min(max(u, 0.0), 1.0) * (high - low))
        return self.clip(round(raw) if self.kind == INT else raw)

    def _scaled(self, value: float) -> float:
        return math.log(value) if self.log else float(value)

    def _unscaled(self, value: float) -> float:
        return math.exp(value) if self.log else value

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


@dataclass(frozen=True)
class ResolutionBound:
    """Every layer counted by ``param`` is followed by 2x2 pooling, which halves the
    feature map; the last map keeps at least ``min_feature_size`` px per side."""

    param: str
    min_feature_size: int

    def max_layers(self, resolution: int) -> int:
        """How many halvings ``resolution`` allows before the map drops below the minimum."""
        layers, size = 0, resolution
        while size // 2 >= self.min_feature_size:
            size //= 2
            layers += 1
        return layers

    def apply(self, count: Param, resolution: int) -> Param:
        """``count`` with its upper bound capped at what ``resolution`` allows."""
        fit = self.max_layers(resolution)
        if fit < int(count.low):  # type: ignore[arg-type]
            raise ValueError(
                f"resolution {resolution} px fits at most {fit} {self.param} layers with 2x2 "
                f"pooling (feature maps must stay >= {self.min_feature_size} px), but the space "
                f"asks for at least {count.low}: use a larger resolution or lower "
                f"space.{self.param}.low"
            )
        return replace(count, high=min(int(count.high), fit))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.param, "min_feature_size": self.min_feature_size}


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of parameters at one resolution; layer counts precede their layers."""

    params: tuple[Param, ...]
    resolution: int
    resolution_bound: ResolutionBound | None = None
    _by_name: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Param] = {}
        for p in self.params:
            if p.name in by_name:
                raise ValueError(f"search space has two parameters named {p.name!r}")
            if p.active_if is not None:
                parent = by_name.get(p.active_if[0])
                if parent is None or parent.kind != INT or parent.active_if is not None:
                    raise ValueError(
                        f"{p.name}: active_if names {p.active_if[0]!r}, which must be an earlier "
                        "unconditional int parameter (a layer count)"
                    )
            by_name[p.name] = p
        object.__setattr__(self, "_by_name", by_name)

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def layer_counts(self) -> tuple[str, ...]:
        """The parameters that enable others (the parents of ``active_if``), in order."""
        return tuple(dict.fromkeys(p.active_if[0] for p in self.params if p.active_if is not None))

    def layers_of(self, count: str) -> list[Param]:
        """The per-layer parameters that the layer count ``count`` enables, in order."""
        return [p for p in self.params if p.active_if is not None and p.active_if[0] == count]

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
        bound = self.resolution_bound
        return {
            "resolution": self.resolution,
            "resolution_bound": bound.to_dict() if bound is not None else None,
            "params": [p.to_dict() for p in self.params],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        bound = data["resolution_bound"]
        return cls(
            params=tuple(Param.from_dict(p) for p in data["params"]),
            resolution=int(data["resolution"]),
            resolution_bound=ResolutionBound(str(bound["param"]), int(bound["min_feature_size"]))
            if bound is not None
            else None,
        )

    def with_params(self, params: Sequence[Param]) -> SearchSpace:
        return replace(self, params=tuple(params))


def _domain(p: Param) -> str:
    if p.kind == CATEGORICAL:
        return f"choices {list(p.choices)}"  # type: ignore[arg-type]
    return f"[{p.low}, {p.high}]" + (" (log)" if p.log else "")


@dataclass(frozen=True)
class Declaration:
    """One parameter as declared: its full domain, and the layer count it repeats for."""

    param: Param
    per_layer_of: str | None = None


@dataclass(frozen=True)
class SpaceSpec:
    """A checked ``conf/space`` mapping, not yet at a resolution."""

    declarations: tuple[Declaration, ...]
    resolution_bound: ResolutionBound | None

    def at(self, resolution: int) -> SearchSpace:
        """The full space at ``resolution``: the declared parameters first, in declared order,
        then every per-layer parameter once per layer the (bounded) count allows.

        Raises ``ValueError`` when the resolution allows fewer layers than the count's low.
        """
        bound = self.resolution_bound
        params = []
        for d in self.declarations:
            if d.per_layer_of is None:
                fits = bound is not None and d.param.name == bound.param
                params.append(bound.apply(d.param, resolution) if fits else d.param)  # type: ignore[union-attr]
        counts = {p.name: int(p.high) for p in params if p.kind == INT}  # type: ignore[arg-type]
        for d in self.declarations:
            if d.per_layer_of is not None:
                params += [
                    replace(d.param, name=layer_name(d.param.name, i), active_if=(d.per_layer_of, i))
                    for i in range(counts[d.per_layer_of])
                ]
        return SearchSpace(params=tuple(params), resolution=resolution, resolution_bound=bound)


def parse_space(spec: Mapping[str, Any]) -> SpaceSpec:
    """Check a ``conf/space`` mapping; ``ValueError`` names the parameter, the key and
    what is allowed. A value of the wrong type is bad configuration, so a ``ValueError``
    too (``config.py`` reports those as ``ConfigError``)."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"space must map parameter names to declarations, got {spec!r}")  # noqa: TRY004
    declarations = [
        _declaration(str(name), value) for name, value in spec.items() if name != RESOLUTION_BOUND
    ]
    if not declarations:
        raise ValueError("space declares no parameter")
    by_name = {d.param.name: d for d in declarations}
    counts = [d.param.name for d in declarations if d.param.kind == INT and d.per_layer_of is None]
    for d in declarations:
        if d.per_layer_of is None:
            continue
        count = by_name.get(d.per_layer_of)
        if count is None or d.per_layer_of not in counts:
            raise ValueError(
                f"space.{d.param.name}.per_layer_of: {d.per_layer_of!r} is not a layer count; "
                f"allowed: a declared int parameter without per_layer_of, one of {counts}"
            )
        if int(count.param.low) < 0:  # type: ignore[arg-type]
            raise ValueError(
                f"space.{d.per_layer_of}.low: a layer count needs low >= 0, got {count.param.low}"
            )
    bound = spec.get(RESOLUTION_BOUND)
    return SpaceSpec(tuple(declarations), _resolution_bound(bound, counts) if bound is not None else None)


def build_space(spec: Mapping[str, Any], resolution: int) -> SearchSpace:
    """The full (un-narrowed) space at ``resolution`` from a ``conf/space`` mapping.

    Raises ``ValueError`` for a malformed mapping and when no architecture fits the resolution.
    """
    return parse_space(spec).at(resolution)


def _declaration(name: str, value: Any) -> Declaration:
    where = f"space.{name}"
    if not isinstance(value, Mapping):
        raise ValueError(  # noqa: TRY004
            f"{where}: a parameter is declared by a mapping with 'type' ({', '.join(KINDS)}), "
            f"or the key must be {RESOLUTION_BOUND!r}; got {value!r}"
        )
    if "type" not in value:
        raise ValueError(f"{where}: missing key 'type'; allowed types: {', '.join(KINDS)}")
    kind = value["type"]
    if kind not in KINDS:
        raise ValueError(f"{where}.type: {kind!r} is not a type; allowed: {', '.join(KINDS)}")
    unknown = [k for k in value if k not in DECLARATION_KEYS[kind]]
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r} for type {kind}; "
            f"allowed: {', '.join(DECLARATION_KEYS[kind])}"
        )
    per_layer_of = value.get("per_layer_of")
    if per_layer_of is not None and not isinstance(per_layer_of, str):
        raise ValueError(f"{where}.per_layer_of must name a layer count parameter, got {per_layer_of!r}")
    if kind == CATEGORICAL:
        return Declaration(Param(name, CATEGORICAL, choices=_choices(where, value)), per_layer_of)
    missing = [k for k in ("low", "high") if k not in value]
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r}; a {kind} parameter needs low and high")
    low, high = (_number(f"{where}.{k}", value[k], kind) for k in ("low", "high"))
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}.log must be true or false, got {log!r}")  # noqa: TRY004
    if low > high:
        raise ValueError(f"{where}: low must be <= high, got low={low} high={high}")
    if log and low <= 0:
        raise ValueError(f"{where}.low: a log-scaled range needs low > 0, got {low}")
    return Declaration(Param(name, kind, low=low, high=high, log=log), per_layer_of)


def _number(where: str, value: Any, kind: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if kind == INT:
        if int(value) != value:
            raise ValueError(f"{where} must be a whole number for an int parameter, got {value!r}")
        return int(value)
    return float(value)


def _choices(where: str, value: Mapping[str, Any]) -> tuple[Any, ...]:
    choices = value.get("choices")
    if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
        raise ValueError(f"{where}.choices must be a non-empty list, got {choices!r}")
    if len(set(map(repr, choices))) != len(choices):
        raise ValueError(f"{where}.choices has duplicates: {list(choices)}")
    return tuple(choices)


def _resolution_bound(value: Any, counts: Sequence[str]) -> ResolutionBound:
    where = f"space.{RESOLUTION_BOUND}"
    if not isinstance(value, Mapping) or sorted(value) != sorted(RESOLUTION_BOUND_KEYS):
        raise ValueError(
            f"{where} must be a mapping with exactly the keys {', '.join(RESOLUTION_BOUND_KEYS)}, "
            f"got {value!r}"
        )
    if value["param"] not in counts:
        raise ValueError(
            f"{where}.param: {value['param']!r} is not a declared int parameter without "
            f"per_layer_of; allowed: {counts}"
        )
    size = value["min_feature_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{where}.min_feature_size must be a whole number >= 1, got {size!r}")
    return ResolutionBound(value["param"], size)
