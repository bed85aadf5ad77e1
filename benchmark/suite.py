"""Suite files: the pydantic schema, YAML loading, and expansion of the grid into cells.

A suite names its components by label (``attacks: {lf: {name: label_flip, params: {rate: 0.02}}}``); ``name``
defaults to the label. Every component's parameters are resolved against its registry schema at load time, so
a typo in a parameter fails validation, not a cell an hour into the run.
"""

from __future__ import annotations

import collections
import itertools
import math
import re
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from benchmark.data.base import DataSpec
from benchmark.errors import ParamError, SuiteError, short
from benchmark.hashing import stable_hash
from benchmark.registry import ENTRY_POINT_GROUPS, REGISTRY, format_validation_error
from benchmark.versions import versions

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
    # poison filters (benchmark/filters) between the attack and the poisoned heads: a grid axis; none when absent
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
        """Stable key: the resolved configuration plus the version of every stage (``benchmark/versions.py``)."""
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


def load_suite(path: str | Path) -> Suite:
    """Load and fully validate a suite; every problem is a SuiteError naming the file and the key path."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    try:
        raw = bounded_yaml(path.read_text(), str(path))
    except RecursionError:
        raise SuiteError(f"{path}: malformed YAML: nested too deeply") from None
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
        check_loadable(suite)
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
    except (Exception, SystemExit) as err:  # a plugin's own validator may raise anything
        raise ParamError(f"{section}.{label}.params: {type(err).__name__}: {short(str(err), 200)}") from None
    if kind in ENTRY_POINT_GROUPS:  # classes: cross-parameter checks (_check_params) run when one is built
        try:
            comp.factory(**params.model_dump())
        except ParamError as err:
            raise ParamError(f"{section}.{label}.params: {err}") from None
        except (Exception, SystemExit) as err:  # a plugin's __init__ or _check_params may raise anything
            raise ParamError(f"{section}.{label}.params: {type(err).__name__}: {short(str(err), 200)}") from None
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
    out: dict[str, dict[str, Any]] = {"dataset": {}, "backbone": {}, "defense": {}, "attack": {}, "filter": {}}
    for label, task in suite.datasets.items():
        out["dataset"][label] = (
            _resolve_data(f"datasets.{label}.external", task.external),
            _resolve_data(f"datasets.{label}.target", task.target),
        )
    for label, spec in suite.backbones.items():
        out["backbone"][label] = _resolve("backbone", "backbones", label, spec)
    for kind, section in (("defense", "defenses"), ("attack", "attacks"), ("filter", "filters")):
        for label, spec in getattr(suite, section).items():
            try:
                variants = sweep_variants(label, spec, section)
            except ValueError as err:
                raise ParamError(str(err)) from None
            for v in variants:
                try:
                    out[kind][v.label] = _resolve(kind, section, v.label, v.spec)
                except ParamError as err:  # name the sweep, not the generated label, when a swept value is bad
                    raise ParamError(_sweep_path(str(err), section, label, v)) from None
    out["head"] = _resolve("head", "head", suite.head.name or "linear_svc", suite.head)
    return out


def _sweep_path(message: str, section: str, label: str, v: Variant) -> str:
    if not v.swept:
        return message
    message = message.replace(f"{section}.{v.label}.params.", f"{section}.{label}.sweep.")
    return message.replace(f"{section}.{v.label}", f"{section}.{label}.sweep ({v.label})")


def parse_only(items: list[str] | None) -> dict[str, list[str]]:
    """``--only defense=pgd,naive --only seed=0`` -> {defense: [pgd, naive], seed: [0]}."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in AXES or not value:
            raise SuiteError(f"--only {item}: expected KEY=VALUE with KEY one of {', '.join(AXES)}")
        # commas inside a variant's brackets (``pf[eps=0.1,num_poisons=5]``) do not separate values
        out.setdefault(key, []).extend(v.strip() for v in re.split(r",(?![^\[]*\])", value))
    return out


def _matches(cell: Cell, rule: dict[str, Any]) -> bool:
    """A rule naming a swept component's written label matches every variant of it."""
    return _rule_matches(rule, lambda axis: str(cell.axis_value(axis)), lambda axis: cell.sweeps.get(axis, ("",))[0])


def _rule_matches(rule: dict[str, Any], label_of: Callable[[str], str], base_of: Callable[[str], str]) -> bool:
    for axis, value in rule.items():
        values = {str(v) for v in (value if isinstance(value, list) else [value])}
        if label_of(axis) not in values and base_of(axis) not in values:
            return False
    return True


def expand(suite: Suite, only: dict[str, list[str]] | None = None) -> list[Cell]:
    """The cartesian product of the grid, minus ``grid.exclude`` rules, restricted to ``only``."""
    resolved = resolve_components(suite)
    labels = suite.axis_labels()
    variants = {axis: sweep_section(getattr(suite, f"{axis}s")) for axis in SWEPT_AXES}
    if only:
        for axis, values in only.items():
            known = {str(v) for v in labels[axis]} | {str(v) for v in suite.base_labels()[axis]}
            unknown = [v for v in values if v not in known]
            if unknown:
                raise SuiteError(f"--only {axis}={','.join(unknown)}: not in the suite; known: {sorted(known)}")
    cells = []
    same = tuple(axis for axis in ("seed", "dataset", "backbone") if len(labels[axis]) == 1)
    for ds, bb, df, at, ft, seed in itertools.product(*(labels[a] for a in AXES)):
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
            filter=resolved["filter"][ft],
            sweeps={
                axis: (variants[axis][label].base, variants[axis][label].swept)
                for axis, label in (("defense", df), ("attack", at), ("filter", ft))
                if variants[axis][label].swept
            },
            same_in_suite=same,
        )
        if any(_matches(cell, rule) for rule in suite.grid.exclude):
            continue
        if only and not _matches(cell, only):
            continue
        cells.append(cell)
    if only and not cells:
        raise SuiteError(f"--only: no cell of the grid matches {short(only, 200)} (after grid.exclude)")
    return cells


# --- load-time checks beyond the schema: duplicate keys, seeds, references, tasks, sizes -----------------------------

MAX_SEED = 2**31 - 1  # numpy and torch generators take any seed up to here on every platform
MAX_CELLS = 10_000  # a grid larger than this is a typo (a seed list pasted twice over), not a plan
MAX_IMAGE_SIZE = 1024  # side of a square image after resize
MAX_SYNTHETIC_BYTES = 8 * 2**30  # generated images held in memory, per dataset
# what a reference may compare with: the metrics a cell logs
REFERENCE_METRICS = (
    "clean_accuracy",
    "poisoned_accuracy",
    "accuracy_drop",
    "attack_success_rate",
    "attack_success_ci_low",
    "attack_success_ci_high",
    "robust_accuracy",
    "external_accuracy",
    "perturbation_linf_max",
    "perturbation_linf_mean",
)
REFERENCE_AXES = ("dataset", "backbone", "defense", "attack", "filter")  # references aggregate over seeds


class _UniqueKeys:
    """A mapping with a repeated key is refused: the last one would silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{short(key)}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    """The pure-Python loader: its errors point at the exact character, and it records where each alias is used
    (``bounded_yaml`` names the one that multiplies most). Read only for a suite that fails."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.alias_uses: list[tuple[yaml.Mark, str, yaml.Node]] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            self.alias_uses.append((event.start_mark, event.anchor, node))
            return node
        return super().compose_node(parent, index)


try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml
    FastLoader: type = UniqueKeyLoader
else:

    class FastLoader(_UniqueKeys, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """libyaml parses and composes (aliases stay shared nodes): 100,000 seeds load in seconds, where the
        pure-Python loader took 15 s on busy shared cores."""

        def __init__(self, stream: Any) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)


def check_loadable(suite: Suite) -> None:
    """Everything a suite can get wrong that the schema does not see; ParamError naming the key."""
    _check_seeds(suite.seeds)
    _check_tasks(suite)
    _check_references(suite)
    _check_size(suite)
    _check_not_all_excluded(suite)


def _check_seeds(seeds: list[int]) -> None:
    for i, seed in enumerate(seeds):
        if not 0 <= seed <= MAX_SEED:
            raise ParamError(f"seeds.{i}: {short(seed)} is outside [0, {MAX_SEED}]")
    # counted once (linear): ``seeds.count`` per seed made 100,000 seeds take minutes
    repeated = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
    if repeated:
        raise ParamError(f"seeds: {short(repeated)} repeated (each seed is one cell per combination)")


def _check_tasks(suite: Suite) -> None:
    for label, task in suite.datasets.items():
        for role in ("external", "target"):
            spec = getattr(task, role)
            where = f"datasets.{label}.{role}"
            if spec.classes is not None and len(spec.classes) < 2:
                raise ParamError(f"{where}.classes: a classification task needs at least two classes, got {spec.classes}")
            if spec.image_size is not None and spec.image_size > MAX_IMAGE_SIZE:
                raise ParamError(f"{where}.image_size: {spec.image_size} exceeds the limit of {MAX_IMAGE_SIZE}")
            if spec.name == "synthetic":
                p = {"n_train": 512, "n_test": 256, "image_size": 32, **spec.params}
                size = (p["n_train"] + p["n_test"]) * 3 * p["image_size"] ** 2 * 4
                if size > MAX_SYNTHETIC_BYTES:
                    raise ParamError(f"{where}.params: n_train + n_test images of side {p['image_size']} take "
                                     f"{size / 2**30:.0f} GiB, above the limit of {MAX_SYNTHETIC_BYTES / 2**30:.0f} GiB")


def _check_references(suite: Suite) -> None:
    # a reference may name a swept variant or the label it was written under (then it matches every variant)
    expanded, written = suite.axis_labels(), suite.base_labels()
    labels = {axis: list(dict.fromkeys([*written[axis], *expanded[axis]])) for axis in expanded}
    for i, ref in enumerate(suite.references):
        if ref.metric not in REFERENCE_METRICS:
            raise ParamError(f"references.{i}.metric: unknown metric '{short(ref.metric)}'; known: "
                             f"{', '.join(REFERENCE_METRICS)}")
        for axis, value in ref.match.items():
            if axis not in REFERENCE_AXES:
                raise ParamError(f"references.{i}.match.{axis}: unknown axis; references match {', '.join(REFERENCE_AXES)}")
            if str(value) not in {str(v) for v in labels[axis]}:
                raise ParamError(f"references.{i}.match.{axis}: '{short(value)}' is not one of {short(labels[axis])}")


def _check_size(suite: Suite) -> None:
    n = grid_size(suite)
    if n > MAX_CELLS:
        raise ParamError(f"grid: {n} cells before exclusions, above the limit of {MAX_CELLS}; split the suite")


def _check_not_all_excluded(suite: Suite) -> None:
    """A grid that ``grid.exclude`` empties is a mistake, not a run of nothing: on labels alone, stopping at the first
    cell that no rule excludes (cheap unless nearly everything is excluded)."""
    if not suite.grid.exclude:
        return
    labels = suite.axis_labels()
    variants = {axis: sweep_section(getattr(suite, f"{axis}s")) for axis in SWEPT_AXES}
    n = 0
    for combo in itertools.product(*(labels[a] for a in AXES)):
        n += 1
        chosen = dict(zip(AXES, combo, strict=True))
        label_of = {axis: str(value) for axis, value in chosen.items()}
        base_of = {axis: variants[axis][chosen[axis]].base for axis in SWEPT_AXES}
        rules = suite.grid.exclude
        if not any(_rule_matches(rule, label_of.__getitem__, lambda a: base_of.get(a, "")) for rule in rules):
            return
    raise ParamError(f"grid.exclude: the rules exclude all {n} cells of the grid; nothing would run")


def _check_grid_size(suite: Suite) -> None:
    """``_check_size`` as the schema's own check (a ValueError), run before any sweep is expanded."""
    try:
        _check_size(suite)
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

# Values a suite's YAML may hold once every alias is expanded: a suite has hundreds, a 10,000-seed list 10,000; an
# alias bomb (nested ``*refs``) billions, which validation and error messages would otherwise walk one by one.
MAX_YAML_VALUES = 200_000


def bounded_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` with unique keys, refusing a document whose aliases expand past ``MAX_YAML_VALUES``.

    The document is composed first (aliases are shared nodes, so composing is linear in the text); its expanded
    size is counted on that graph (each node once); only then is it built into Python objects. A document that
    fails is read again by the pure-Python loader, whose message names the exact place."""
    try:
        loader = FastLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if _expanded_sizes(node)[id(node)] <= MAX_YAML_VALUES:
                return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError:
        pass
    return _load_slowly(text, source)


def _load_slowly(text: str, source: str) -> Any:
    """The pure-Python loader: raises its own error, or the alias limit's with the alias that multiplies most."""
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source, loader.alias_uses)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """Values under each node (itself included) with aliases expanded, by node id; iterative, each node once, so a
    9^9 bomb costs its few dozen nodes (Python's integers hold any count)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        kids = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(1 if isinstance(k, yaml.ScalarNode) else sizes[id(k)] for k in kids)
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for kid in kids:
            if isinstance(kid, yaml.ScalarNode):  # size 1, counted above: most nodes, never pushed
                continue
            if id(kid) in open_nodes:
                raise yaml.constructor.ConstructorError(
                    None, None, "a YAML alias refers to a node that contains it (recursive alias)", kid.start_mark)
            if id(kid) not in sizes:
                stack.append((kid, False))
    return sizes


def _keyed_children(node: yaml.Node) -> list[tuple[Any, yaml.Node]]:
    """(key, value node) of a mapping, (index, item node) of a sequence, nothing for a scalar."""
    if isinstance(node, yaml.MappingNode):
        return list(node.value)
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return []


def _check_expansion(root: yaml.Node, source: str, uses: list[tuple[yaml.Mark, str, yaml.Node]]) -> None:
    sizes = _expanded_sizes(root)
    if sizes[id(root)] <= MAX_YAML_VALUES:
        return
    # name the alias that multiplies most, where it is used: its line and the key it sits under
    if not uses:
        raise SuiteError(f"{source}: the suite holds more than {MAX_YAML_VALUES:,} values; a suite needs far fewer")
    mark, anchor, node = max(uses, key=lambda u: sizes.get(id(u[2]), 1))  # scalars are not in sizes: 1 each
    where = ".".join(short(str(k), 30) for k in _path_to(root, mark, node)) or "the document"
    raise SuiteError(
        f"{source}: {where} (line {mark.line + 1}, alias *{short(anchor, 30)}): the suite expands to more than "
        f"{MAX_YAML_VALUES:,} values once its YAML aliases are expanded; a suite needs far fewer (nested aliases "
        "multiply)"
    )


def _position(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line, mark.column


def _path_to(root: yaml.Node, use: yaml.Mark, target: yaml.Node) -> list[Any]:
    """The key path (as written) of an alias used at ``use``: down through the nodes whose text spans the use."""
    path: list[Any] = []
    node, at = root, _position(use)
    for _ in range(100):
        step = None
        for key, child in _keyed_children(node):
            key_at = _position(key.start_mark) if isinstance(key, yaml.Node) else None
            if child is target and (key_at is None or key_at <= at):
                step = (key, None)  # the alias itself (the last such key written before the use)
            elif child is not target and _position(child.start_mark) <= at <= _position(child.end_mark):
                step = (key, child)
                break
        if step is None:
            return path
        key, child = step
        path.append(key.value if isinstance(key, yaml.Node) else key)
        if child is None:
            return path
        node = child
    return path