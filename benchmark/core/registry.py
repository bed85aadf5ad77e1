"""Named components (datasets, backbones, defenses, attacks, heads) and their parameter schemas.

Every component has a pydantic model of its parameters (unknown keys are errors, defaults carry a source in a
comment where they come from the paper or its code), a one-line description, and a factory. Attacks and defenses
are classes; third-party ones register through the ``benchmark.attacks`` / ``benchmark.defenses`` entry-point
groups, or are named in a suite as ``module:Class`` (which imports and runs that module: only use paths you trust).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from benchmark.core.errors import ParamError, short

KINDS = ("dataset", "backbone", "defense", "attack", "head", "filter")
# kinds whose components are classes (name, description, Params), open to plugins: kind -> entry-point group
ENTRY_POINT_GROUPS = {"attack": "benchmark.attacks", "defense": "benchmark.defenses", "filter": "benchmark.filters"}


class Params(BaseModel):
    """Base of every component's parameter model: strict about unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    pass


class Configurable:
    """Base of the class components (attacks, defenses, filters): ``Params`` validated at construction and
    ``_check_params`` for checks spanning several parameters, as ART does; ``kind`` names the component in errors."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except ValidationError as err:
            raise ParamError(f"{self.kind} '{self.name}': {format_validation_error(err)}") from None
        self._check_params()

    def _check_params(self) -> None:
        """Checks spanning several parameters; raise ParamError with a clear message."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    description: str
    params: type[BaseModel]
    factory: Any  # a class or a function; what it takes depends on the kind

    def validate(self, params: dict[str, Any] | None) -> BaseModel:
        """Resolve ``params`` against the schema; raise ParamError naming the bad key."""
        try:
            return self.params(**(params or {}))
        except ValidationError as err:
            raise ParamError(f"{self.kind} '{self.name}': {format_validation_error(err)}") from None

    def resolve(self, params: BaseModel | dict[str, Any] | None) -> BaseModel:
        """``params`` as this component's model: kept if it already is one, else re-validated (ParamError)."""
        if isinstance(params, self.params):
            return params
        if isinstance(params, BaseModel):
            params = params.model_dump()
        return self.validate(params)

    def defaults(self) -> dict[str, Any]:
        out = {}
        for key, field in self.params.model_fields.items():
            out[key] = "(required)" if field.is_required() else field.get_default(call_default_factory=True)
        return out


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line: the first failing key path, what was expected, and what was given."""
    errors = err.errors()
    # a misspelt key shows up as "unknown key" plus "required key is missing": name the misspelling first
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in first["loc"])
    path = ".".join(p for p in (prefix, loc) if p)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    given = first.get("input")
    # the value given, cut to a short prefix: an alias-built value may be megabytes
    given_text = short(repr(given) if isinstance(given, str) else given)
    shown = "" if first["type"] in ("missing", "extra_forbidden") or isinstance(given, dict) else f" (got {given_text})"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {msg}{shown}{more}" if path else f"{msg}{more}"


class Registry:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Component]] = {k: {} for k in KINDS}
        self._bases: dict[str, type] = {}
        self._entry_points_loaded: set[str] = set()

    def add(self, kind: str, name: str, description: str, params: type[BaseModel], factory: Any) -> Component:
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}")
        comp = Component(kind, name, description, params, factory)
        self._items[kind][name] = comp
        return comp

    def register(self, kind: str, name: str, description: str, params: type[BaseModel] = NoParams) -> Callable:
        """Decorator form of ``add``."""

        def deco(obj: Any) -> Any:
            self.add(kind, name, description, params, obj)
            return obj

        return deco

    def declare_base(self, kind: str, base: type) -> None:
        """The class every component of ``kind`` subclasses (set by the module that defines it, so the registry
        imports none of them)."""
        self._bases[kind] = base

    def add_class(self, kind: str, cls: Any, name: str | None = None) -> Component:
        """Register a component class (``name``, ``description``, ``Params``) under its name or the one given."""
        base = self._bases.get(kind)
        if base is None or not (isinstance(cls, type) and issubclass(cls, base)):
            expected = f"{base.__module__}.{base.__name__}" if base else f"a {kind} class"
            raise ParamError(f"{kind} '{name or cls}' is not a subclass of {expected}")
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
            raise ParamError(f"{kind} '{name or cls.name}': its Params is not a pydantic model")
        return self.add(kind, name or cls.name, cls.description, cls.Params, cls)

    def get(self, kind: str, name: str) -> Component:
        _load_builtins()
        if kind in ENTRY_POINT_GROUPS:
            self._load_entry_points(kind)
            if ":" in name and name not in self._items[kind]:
                return self._load_path(kind, name)
        try:
            return self._items[kind][name]
        except KeyError:
            known = ", ".join(sorted(self._items[kind]))
            raise ParamError(f"unknown {kind} '{name}'; known: {known}") from None

    def build(self, kind: str, name: str, params: BaseModel | dict[str, Any] | None = None) -> Any:
        """The class component registered as ``name`` (or a ``module:Class`` path), built with ``params``."""
        comp = self.get(kind, name)
        return comp.factory(**comp.resolve(params).model_dump())

    def names(self, kind: str) -> list[str]:
        _load_builtins()
        if kind in ENTRY_POINT_GROUPS:
            self._load_entry_points(kind)
        return sorted(self._items[kind])

    def items(self, kind: str) -> Iterator[Component]:
        for name in self.names(kind):
            yield self._items[kind][name]

    def _load_entry_points(self, kind: str) -> None:
        if kind in self._entry_points_loaded:
            return
        self._entry_points_loaded.add(kind)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUPS[kind]):
            try:
                self.add_class(kind, ep.load(), name=ep.name)
            except Exception as err:  # a broken plugin must not break the benchmark
                import warnings

                warnings.warn(f"could not load {kind} entry point {ep.name!r}: {err}", stacklevel=2)

    def _load_path(self, kind: str, path: str) -> Component:
        module_name, _, attr = path.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (Exception, SystemExit) as err:  # a plugin module may raise anything, or exit, while it is imported
            raise ParamError(f"{kind} path '{path}' cannot be imported: {type(err).__name__}: {err}") from None
        return self.add_class(kind, cls, name=path)


REGISTRY = Registry()
_builtins_loaded = False


def _load_builtins() -> None:
    """Import the modules that register built-in components (once, lazily, to keep start-up fast)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


BUILTIN_MODULES = [
    "adapters.datasets",
    "adapters.backbones",
    "adapters.defenses",
    "adapters.heads",
    "adapters.filters",
    "adapters.attacks",
]
