"""Suite files' schema: the pydantic models of a suite, its sweeps, the cells of its grid, and the checks the
schema runs itself (labels, the grid's size by arithmetic before any sweep is expanded).

A suite names its components by label (``attacks: {lf: {name: label_flip, params: {rate: 0.02}}}``); ``name``
defaults to the label. Every component's parameters are resolved against its registry schema at load time
(``benchmark.suite.load``), so a typo in a parameter fails validation, not a cell an hour into the run.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from adapters.datasets.base import DataSpec
from benchmark.core.errors import ParamError, short
from benchmark.core.hashing import stable_hash
from benchmark.core.versions import versions

AXES = ("dataset", "backbone", "defense", "attack", "filter", "seed")
SWEPT_AXES = ("defense", "attack", "filter")  # axes whose components may carry a ``sweep:``
NO_FILTER = "none"  # the filter name (and default label) of cells whose poisoned heads see every row


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentSpec(Strict):
    name: str | None = None  # registry name; the label when omitted
    params: dict[str, Any] = Field(default_factory=dict)
    # parameter -> values: one labelled variant per combination (``poison_frog[num_poisons=5]``), see ``sweep_variants``
    sweep: dict[str, list[Any]] = Field(default_factory=dict)


class TaskSpec(Strict):
    external: DataSpec
    target: DataSpec


class EvaluationSpec(Strict):
    # None: the attack's eps when it has one, else 3/255 (the paper's adversarial-training eps)
    robust_eps: float | None = Field(None, ge=0.0, le=1.0)
    robust_steps: int = Field(10, ge=1)
    robust_samples: int = Field(500, ge=1)  # test images attacked for robust accuracy
    # robust accuracy at each of these eps too, in the no-attack cells (attack ``none``: the features and the clean
    # head on the full task): one metric per value (``sweep_metric``); the grid does not grow
    sweep: dict[Literal["robust_eps"], list[float]] = Field(default_factory=dict)

    @field_validator("sweep")
    @classmethod
    def _eps_values(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"sweep.{key}: list at least one value")
            if any(not 0.0 <= x <= 1.0 for x in values):
                raise ValueError(f"sweep.{key}: every eps must be in [0, 1]")
        return v


class GridSpec(Strict):
    exclude: list[dict[str, Any]] = Field(default_factory=list)


class ReferenceSpec(Strict):
    """A published number attached to the cells it belongs to (matched on axis labels)."""

    match: dict[str, Any]
    metric: str
    value: float
    source: str = ""  # where the number comes from, e.g. "paper Table 2"
    table: str = ""  # the report groups references with the same table id into one published-vs-measured table


class ResourcesSpec(Strict):
    # per cell; above these no machine can host a cell, and Ray would wait for one for ever
    num_cpus: float = Field(1, ge=0, le=1024)
    num_gpus: float = Field(0, ge=0, le=64)
    # train the backbones the cells need in vmapped groups of one architecture before the cells run
    # (benchmark/grid/pretrain.py); auto: on CUDA, where one backbone at batch 64 leaves the card idle, off on the CPU;
    # the local executor only
    group_backbones: Literal["auto"] | StrictBool = "auto"


class Suite(Strict):
    name: str
    description: str = ""
    # strict: YAML's ``true`` is not seed 1
    seeds: list[StrictInt] = Field(default_factory=lambda: [0], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    datasets: dict[str, TaskSpec] = Field(min_length=1)
    backbones: dict[str, ComponentSpec] = Field(min_length=1)
    defenses: dict[str, ComponentSpec] = Field(min_length=1)
    attacks: dict[str, ComponentSpec] = Field(min_length=1)
    head: ComponentSpec = ComponentSpec(name="linear_svc")
    # poison filters (adapters/filters) between the attack and the poisoned heads: a grid axis; none when absent
    filters: dict[str, ComponentSpec] = Field(default_factory=lambda: {NO_FILTER: ComponentSpec()}, min_length=1)
    evaluation: EvaluationSpec = EvaluationSpec()
    grid: GridSpec = GridSpec()
    references: list[ReferenceSpec] = Field(default_factory=list)
    executor: Literal["local", "ray"] = "local"
    resources: ResourcesSpec = ResourcesSpec()

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '-', '_' or '.' (it names the MLflow experiment)")
        return v

    @field_validator("datasets", "backbones", "defenses", "attacks", "filters")
    @classmethod
    def _labels(cls, v: dict[str, Any]) -> dict[str, Any]:
        for label in v:
            check_label(label)
        return v

    @model_validator(mode="after")
    def _check_grid(self) -> Suite:
        _check_grid_size(self)  # before any sweep is expanded: a 100 x 100 x 100 sweep is refused by arithmetic
        labels = self.axis_labels()
        bases = self.base_labels()
        for i, rule in enumerate(self.grid.exclude):
            for key, value in rule.items():
                if key not in AXES:
                    raise ValueError(f"grid.exclude.{i}: unknown axis '{key}'; axes are {', '.join(AXES)}")
                for v in value if isinstance(value, list) else [value]:
                    if v not in labels[key] and v not in bases[key]:
                        raise ValueError(f"grid.exclude.{i}.{key}: '{short(v)}' is not one of {short(labels[key])}")
        return self

    def axis_labels(self) -> dict[str, list[Any]]:
        return {
            "dataset": list(self.datasets),
            "backbone": list(self.backbones),
            "defense": list(sweep_section(self.defenses, "defenses")),
            "attack": list(sweep_section(self.attacks, "attacks")),
            "filter": list(sweep_section(self.filters, "filters")),
            "seed": list(self.seeds),
        }

    def base_labels(self) -> dict[str, list[Any]]:
        """Labels as written (a swept component once): what exclusion rules and references may name."""
        return {**self.axis_labels(), "defense": list(self.defenses), "attack": list(self.attacks),
                "filter": list(self.filters)}


# ---------------------------------------------------------------------------------------------------------------
# sweeps: a parameter given as a list under ``sweep:`` expands into labelled variants


class Variant(Strict):
    """One variant of a component: its axis label, the label it was written under, and the swept values."""

    label: str  # ``poison_frog[num_poisons=5]``; the written label when nothing is swept
    base: str  # ``poison_frog``
    spec: ComponentSpec  # name filled in, sweep values merged into params, no sweep left
    swept: dict[str, Any] = Field(default_factory=dict)


def _value_text(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


def sweep_variants(label: str, spec: ComponentSpec, section: str = "") -> list[Variant]:
    """The cartesian product of ``spec.sweep`` (parameters in sorted order), each merged into ``spec.params``.

    Raises ValueError naming the key for an empty list or a parameter set both in ``params`` and in ``sweep``;
    each variant's parameters are then validated against the component's schema like any other."""
    name = spec.name or label
    if not spec.sweep:
        return [Variant(label=label, base=label, spec=ComponentSpec(name=name, params=spec.params))]
    keys = sorted(spec.sweep)
    where = f"{section}.{label}" if section else label
    for key in keys:
        if not spec.sweep[key]:
            raise ValueError(f"{where}.sweep.{key}: list at least one value")
        if key in spec.params:
            raise ValueError(f"{where}.sweep.{key}: also set in {label}.params; give it in one place")
    out = []
    for values in itertools.product(*(spec.sweep[k] for k in keys)):
        swept = dict(zip(keys, values, strict=True))
        text = ",".join(f"{k}={_value_text(v)}" for k, v in swept.items())
        params = {**spec.params, **swept}
        out.append(Variant(label=f"{label}[{text}]", base=label, spec=ComponentSpec(name=name, params=params),
                           swept=swept))
    return out


def sweep_section(section: dict[str, ComponentSpec], name: str = "") -> dict[str, Variant]:
    """A ``defenses:`` or ``attacks:`` section with every sweep expanded, keyed by variant label, in order."""
    return {v.label: v for label, spec in section.items() for v in sweep_variants(label, spec, name)}


def sweep_lines(suite: Suite) -> list[str]:
    """What ``run --dry-run`` says about the suite's sweeps, one line per swept component."""
    out = []
    for section in (f"{axis}s" for axis in SWEPT_AXES):
        for label, spec in getattr(suite, section).items():
            if spec.sweep:
                values = " x ".join(f"{k} {spec.sweep[k]}" for k in sorted(spec.sweep))
                out.append(f"sweep {section}.{label}: {values} -> {len(sweep_variants(label, spec))} variants")
    for key, values in suite.evaluation.sweep.items():
        out.append(f"sweep evaluation.{key}: {values} -> one metric per value in the no-attack cells "
                   "(the grid does not grow)")
    return out


def sweep_metric(metric: str, param: str, value: float) -> str:
    """The MLflow name of a metric measured at one swept evaluation value (``robust_accuracy.robust_eps_0.1``)."""
    return f"{metric}.{param}_{_value_text(value)}"


class Resolved(Strict):
    """A component with every parameter resolved (defaults filled in)."""

    label: str
    name: str
    params: dict[str, Any]


class Cell(Strict):
    """One combination of the grid: plain, hashable data; everything ``run_cell`` needs to know."""

    suite: str
    seed: int
    dataset: str
    external: DataSpec
    target: DataSpec
    backbone: Resolved
    defense: Resolved
    attack: Resolved
    head: Resolved
    evaluation: EvaluationSpec
    filter: Resolved = Resolved(label=NO_FILTER, name=NO_FILTER, params={})
    # axis -> (written label, swept parameter values); the variant's label and params already carry them
    sweeps: dict[str, tuple[str, dict[str, Any]]] = Field(default_factory=dict)
    # axes with one value in the whole suite (seed, dataset, backbone): the title leaves them out
    same_in_suite: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Stable key: the resolved configuration plus the version of every stage (``benchmark/core/versions.py``)."""
        # no filter leaves the key of a cell as it was before filters existed (and its label is not in the key)
        body = self.model_dump(
            mode="json", exclude={"suite", "sweeps", "same_in_suite"} | ({"filter"} if not self.filtered else set())
        )
        return stable_hash({"cell": body, "versions": versions()})

    @property
    def filtered(self) -> bool:
        """Whether a poison filter runs between the attack and the poisoned heads."""
        return self.filter.name != NO_FILTER

    def tags(self) -> dict[str, str]:
        tags = {
            "dataset": self.dataset,
            "backbone": self.backbone.label,
            "defense": self.defense.label,
            "attack": self.attack.label,
            "filter": self.filter.label,
            "seed": str(self.seed),
            **self.sweep_tags(),
        }
        return tags

    def sweep_tags(self) -> dict[str, str]:
        """``attack.base: poison_frog``, ``sweep.attack.num_poisons: 5``: for grouping and plotting in the UI."""
        out = {}
        for axis, (base, swept) in self.sweeps.items():
            out[f"{axis}.base"] = base
            out.update({f"sweep.{axis}.{k}": _value_text(v) for k, v in swept.items()})
        return out

    def axis_value(self, axis: str) -> Any:
        return self.seed if axis == "seed" else self.tags()[axis]

    def title(self) -> str:
        """The run name: what differs between a suite's cells, first (MLflow's table cuts long names); the seed,
        dataset and backbone only where the suite has several, so that no column-wide suffix repeats in every row."""
        t = self.tags()
        parts = [t["defense"], f"{t['attack']} · {t['filter']}" if self.filtered else t["attack"]]
        if "seed" not in self.same_in_suite:
            parts.append(f"s{t['seed']}")
        place = [t[axis] for axis in ("dataset", "backbone") if axis not in self.same_in_suite]
        if place:
            parts.append("/".join(place))
        return " · ".join(parts)

    def flat_params(self) -> dict[str, Any]:
        """Every resolved hyper-parameter as a flat ``section.key`` mapping, for MLflow params."""
        out: dict[str, Any] = {"seed": self.seed, "dataset": self.dataset}
        for role in ("external", "target"):
            spec = getattr(self, role)
            d = spec.model_dump(mode="json")
            params = d.pop("params")
            for k, v in d.items():
                out[f"{role}.{k}"] = v
            for k, v in params.items():
                out[f"{role}.params.{k}"] = v
        roles = ("backbone", "defense", "attack", "head") + (("filter",) if self.filtered else ())
        for role in roles:
            comp = getattr(self, role)
            out[f"{role}"] = comp.name
            for k, v in comp.params.items():
                out[f"{role}.{k}"] = v
        for k, v in self.evaluation.model_dump().items():
            out[f"evaluation.{k}"] = v
        return out


MAX_SEED = 2**31 - 1  # numpy and torch generators take any seed up to here on every platform
MAX_CELLS = 10_000  # a grid larger than this is a typo (a seed list pasted twice over), not a plan

def check_size(suite: Suite) -> None:
    n = grid_size(suite)
    if n > MAX_CELLS:
        raise ParamError(f"grid: {n} cells before exclusions, above the limit of {MAX_CELLS}; split the suite")


def _check_grid_size(suite: Suite) -> None:
    """``check_size`` as the schema's own check (a ValueError), run before any sweep is expanded."""
    try:
        check_size(suite)
    except ParamError as err:
        raise ValueError(str(err)) from None


def _variants(section: dict[str, ComponentSpec]) -> int:
    """How many variants a section's sweeps expand into, by arithmetic: nothing is expanded."""
    return sum(math.prod(len(values) for values in spec.sweep.values()) for spec in section.values())


def grid_size(suite: Suite) -> int:
    """Cells before exclusions, computed from the section sizes without expanding a sweep."""
    return (len(suite.datasets) * len(suite.backbones) * len(suite.seeds) * _variants(suite.defenses)
            * _variants(suite.attacks) * _variants(suite.filters))


# --- labels: each one names a grid value, a run and a tag --------------------------------------------------------

MAX_LABEL_CHARS = 100  # MLflow's run table cuts a run name long before this


def check_label(label: Any) -> None:
    """A label is one line of printable text: it becomes part of run names, tags and ``--only`` values."""
    text = str(label)
    if not text.strip():
        raise ValueError(f"label '{short(text)}': a label must not be empty")
    if not text.isprintable():
        raise ValueError(f"label '{short(text)}': a label is one line of printable characters (no newline or tab)")
    if text != text.strip():
        raise ValueError(f"label '{short(text)}': a label must not start or end with a space")
    if len(text) > MAX_LABEL_CHARS:
        raise ValueError(f"label '{short(text)}': longer than {MAX_LABEL_CHARS} characters")


# --- YAML: aliases are counted before anything is built ----------------------------------------------------------

