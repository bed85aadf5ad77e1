"""Loading a suite: YAML to the validated schema, every component resolved against the registry, the load-time
checks the schema cannot make (seeds, tasks, references, exclusions), and expansion of the grid into cells."""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from adapters.datasets.base import DataSpec
from benchmark.core.errors import ParamError, SuiteError, short
from benchmark.core.registry import REGISTRY, format_validation_error
from benchmark.suite.schema import (
    AXES,
    MAX_SEED,
    SWEPT_AXES,
    Cell,
    ComponentSpec,
    Resolved,
    Suite,
    Variant,
    check_size,
    sweep_section,
    sweep_variants,
)
from benchmark.suite.yaml_bounds import bounded_yaml


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
    params = _checked_params(kind, name, spec.params, f"{section}.{label}")
    return Resolved(label=label, name=name, params=params.model_dump(mode="json"))


def _resolve_data(section: str, spec: DataSpec) -> DataSpec:
    params = _checked_params("dataset", spec.name, spec.params, section)
    return spec.model_copy(update={"params": params.model_dump(mode="json")})


def _checked_params(kind: str, name: str, given: dict[str, Any], where: str) -> BaseModel:
    """The component's params validated, and the component built once with them (its ``_check_params``); any
    problem a ParamError naming the key under ``where``."""
    try:
        comp = REGISTRY.get(kind, name)
    except ParamError as err:
        raise ParamError(f"{where}.name: {err}") from None
    try:
        params = comp.params(**given)
    except ValidationError as err:
        raise ParamError(f"{format_validation_error(err, prefix=f'{where}.params')}") from None
    except (Exception, SystemExit) as err:  # a plugin's own validator may raise anything
        raise ParamError(f"{where}.params: {type(err).__name__}: {short(str(err), 200)}") from None
    try:  # cross-parameter checks (_check_params) run when one is built
        comp.cls(**params.model_dump())
    except ParamError as err:
        raise ParamError(f"{where}.params: {err}") from None
    except (Exception, SystemExit) as err:  # a plugin's __init__ or _check_params may raise anything
        raise ParamError(f"{where}.params: {type(err).__name__}: {short(str(err), 200)}") from None
    return params


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



def check_loadable(suite: Suite) -> None:
    """Everything a suite can get wrong that the schema does not see; ParamError naming the key."""
    _check_seeds(suite.seeds)
    _check_tasks(suite)
    _check_references(suite)
    check_size(suite)
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

