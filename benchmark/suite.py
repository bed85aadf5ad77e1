"""Suite files: the pydantic schema, YAML loading, and expansion of the grid into cells.

A suite names its components by label (``attacks: {lf: {name: label_flip, params: {rate: 0.02}}}``); ``name``
defaults to the label. Every component's parameters are resolved against its registry schema at load time, so
a typo in a parameter fails validation, not a cell an hour into the run.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark.data.base import DataSpec
from benchmark.errors import ParamError, SuiteError
from benchmark.hashing import stable_hash
from benchmark.registry import ENTRY_POINT_GROUPS, REGISTRY, format_validation_error
from benchmark.versions import versions

AXES = ("dataset", "backbone", "defense", "attack", "seed")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentSpec(Strict):
    name: str | None = None  # registry name; the label when omitted
    params: dict[str, Any] = Field(default_factory=dict)


class TaskSpec(Strict):
    external: DataSpec
    target: DataSpec


class EvaluationSpec(Strict):
    # None: the attack's eps when it has one, else 3/255 (the paper's adversarial-training eps)
    robust_eps: float | None = Field(None, ge=0.0, le=1.0)
    robust_steps: int = Field(10, ge=1)
    robust_samples: int = Field(500, ge=1)  # test images attacked for robust accuracy


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
    num_cpus: float = Field(1, ge=0)
    num_gpus: float = Field(0, ge=0)


class Suite(Strict):
    name: str
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    datasets: dict[str, TaskSpec] = Field(min_length=1)
    backbones: dict[str, ComponentSpec] = Field(min_length=1)
    defenses: dict[str, ComponentSpec] = Field(min_length=1)
    attacks: dict[str, ComponentSpec] = Field(min_length=1)
    head: ComponentSpec = ComponentSpec(name="linear_svc")
    # a poison filter (benchmark/filters) between the attack and the poisoned heads, for every cell; none when absent
    filter: ComponentSpec | None = None
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

    @model_validator(mode="after")
    def _check_grid(self) -> Suite:
        labels = self.axis_labels()
        for i, rule in enumerate(self.grid.exclude):
            for key, value in rule.items():
                if key not in AXES:
                    raise ValueError(f"grid.exclude.{i}: unknown axis '{key}'; axes are {', '.join(AXES)}")
                for v in value if isinstance(value, list) else [value]:
                    if v not in labels[key]:
                        raise ValueError(f"grid.exclude.{i}.{key}: '{v}' is not one of {labels[key]}")
        return self

    def axis_labels(self) -> dict[str, list[Any]]:
        return {
            "dataset": list(self.datasets),
            "backbone": list(self.backbones),
            "defense": list(self.defenses),
            "attack": list(self.attacks),
            "seed": list(self.seeds),
        }


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
    filter: Resolved | None = None

    @property
    def key(self) -> str:
        """Stable key: the resolved configuration plus the version of every stage (``benchmark/versions.py``)."""
        # no filter leaves the key of a cell as it was before filters existed
        body = self.model_dump(mode="json", exclude={"suite"} | ({"filter"} if self.filter is None else set()))
        return stable_hash({"cell": body, "versions": versions()})

    def tags(self) -> dict[str, str]:
        tags = {
            "dataset": self.dataset,
            "backbone": self.backbone.label,
            "defense": self.defense.label,
            "attack": self.attack.label,
            "seed": str(self.seed),
        }
        if self.filter is not None:
            tags["filter"] = self.filter.label
        return tags

    def axis_value(self, axis: str) -> Any:
        return self.seed if axis == "seed" else self.tags()[axis]

    def title(self) -> str:
        t = self.tags()
        return f"{t['dataset']}/{t['backbone']}/{t['defense']}/{t['attack']}/seed{t['seed']}"

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
        for role in ("backbone", "defense", "attack", "head", "filter"):
            comp = getattr(self, role)
            if comp is None:
                continue
            out[f"{role}"] = comp.name
            for k, v in comp.params.items():
                out[f"{role}.{k}"] = v
        for k, v in self.evaluation.model_dump().items():
            out[f"evaluation.{k}"] = v
        return out


def load_suite(path: str | Path) -> Suite:
    """Load and fully validate a suite; every problem is a SuiteError naming the file and the key path."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(f"{path}:{where}: malformed YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SuiteError(f"{path}: cannot read suite: {err}") from None
    return parse_suite(raw, source=str(path))


def parse_suite(raw: Any, source: str = "<suite>") -> Suite:
    if not isinstance(raw, dict):
        raise SuiteError(f"{source}: a suite is a YAML mapping at the top level, got {type(raw).__name__}")
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        raise SuiteError(f"{source}: {format_validation_error(err)}") from None
    try:
        resolve_components(suite)
    except ParamError as err:
        raise SuiteError(f"{source}: {err}") from None
    return suite


def _resolve(kind: str, section: str, label: str, spec: ComponentSpec) -> Resolved:
    name = spec.name or label
    try:
        comp = REGISTRY.get(kind, name)
    except ParamError as err:
        raise ParamError(f"{section}.{label}.name: {err}") from None
    try:
        params = comp.params(**spec.params)
    except ValidationError as err:
        raise ParamError(f"{format_validation_error(err, prefix=f'{section}.{label}.params')}") from None
    if kind in ENTRY_POINT_GROUPS:  # classes: cross-parameter checks (_check_params) run when one is built
        try:
            comp.factory(**params.model_dump())
        except ParamError as err:
            raise ParamError(f"{section}.{label}.params: {err}") from None
    return Resolved(label=label, name=name, params=params.model_dump(mode="json"))


def _resolve_data(section: str, spec: DataSpec) -> DataSpec:
    try:
        comp = REGISTRY.get("dataset", spec.name)
    except ParamError as err:
        raise ParamError(f"{section}.name: {err}") from None
    try:
        params = comp.params(**spec.params)
    except ValidationError as err:
        raise ParamError(format_validation_error(err, prefix=f"{section}.params")) from None
    return spec.model_copy(update={"params": params.model_dump(mode="json")})


def resolve_components(suite: Suite) -> dict[str, dict[str, Any]]:
    """Resolve every component of the suite against the registry (raises ParamError with the key path)."""
    out: dict[str, dict[str, Any]] = {"dataset": {}, "backbone": {}, "defense": {}, "attack": {}}
    for label, task in suite.datasets.items():
        out["dataset"][label] = (
            _resolve_data(f"datasets.{label}.external", task.external),
            _resolve_data(f"datasets.{label}.target", task.target),
        )
    for kind, section in (("backbone", "backbones"), ("defense", "defenses"), ("attack", "attacks")):
        for label, spec in getattr(suite, section).items():
            out[kind][label] = _resolve(kind, section, label, spec)
    out["head"] = _resolve("head", "head", suite.head.name or "linear_svc", suite.head)
    if suite.filter is not None:
        if not suite.filter.name:
            raise ParamError("filter.name: required key is missing (a filter has no label to default to)")
        out["filter"] = _resolve("filter", "filter", suite.filter.name, suite.filter)
    return out


def parse_only(items: list[str] | None) -> dict[str, list[str]]:
    """``--only defense=pgd,naive --only seed=0`` -> {defense: [pgd, naive], seed: [0]}."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in AXES or not value:
            raise SuiteError(f"--only {item}: expected KEY=VALUE with KEY one of {', '.join(AXES)}")
        out.setdefault(key, []).extend(v.strip() for v in value.split(","))
    return out


def _matches(cell: Cell, rule: dict[str, Any]) -> bool:
    for axis, value in rule.items():
        values = value if isinstance(value, list) else [value]
        if str(cell.axis_value(axis)) not in {str(v) for v in values}:
            return False
    return True


def expand(suite: Suite, only: dict[str, list[str]] | None = None) -> list[Cell]:
    """The cartesian product of the grid, minus ``grid.exclude`` rules, restricted to ``only``."""
    resolved = resolve_components(suite)
    labels = suite.axis_labels()
    if only:
        for axis, values in only.items():
            known = {str(v) for v in labels[axis]}
            unknown = [v for v in values if v not in known]
            if unknown:
                raise SuiteError(f"--only {axis}={','.join(unknown)}: not in the suite; known: {sorted(known)}")
    cells = []
    for ds, bb, df, at, seed in itertools.product(*(labels[a] for a in AXES)):
        external, target = resolved["dataset"][ds]
        cell = Cell(
            suite=suite.name,
            seed=seed,
            dataset=ds,
            external=external,
            target=target,
            backbone=resolved["backbone"][bb],
            defense=resolved["defense"][df],
            attack=resolved["attack"][at],
            head=resolved["head"],
            evaluation=suite.evaluation,
            filter=resolved.get("filter"),
        )
        if any(_matches(cell, rule) for rule in suite.grid.exclude):
            continue
        if only and not _matches(cell, only):
            continue
        cells.append(cell)
    return cells
