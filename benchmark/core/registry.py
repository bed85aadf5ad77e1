"""Named components of every kind and their parameter schemas, registered one way.

Every component is a ``Configurable`` class: a pydantic ``Params`` model (unknown keys are errors, defaults carry a
source in a comment where they come from the paper or its code), a one-line ``description``, and the method that does
the work (``forward``, ``training_batch``, ``keep``, ``build``, ``fit``, ``load``). Built-ins register with the
``register`` decorator; third-party ones through their kind's entry-point group (``KINDS``), or named in a suite as
``module:Class`` (which imports and runs that module: only use paths you trust). ``make(kind, name, params)`` builds
one.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from benchmark.core.errors import ParamError, short


@dataclass(frozen=True)
class Kind:
    """What a kind of component is: the class its components subclass (``module:Class``), the entry-point group
    plugins register in, and the package whose import registers the built-ins."""

    base: str
    group: str
    package: str


# the order is the one ``benchmark list`` prints
KINDS: dict[str, Kind] = {
    "dataset": Kind("adapters.datasets.base:DataSource", "benchmark.datasets", "adapters.datasets"),
    "backbone": Kind("adapters.backbones.base:Architecture", "benchmark.backbones", "adapters.backbones"),
    "defense": Kind("adapters.defenses.base:Defense", "benchmark.defenses", "adapters.defenses"),
    "attack": Kind("adapters.attacks.base:Attack", "benchmark.attacks", "adapters.attacks"),
    "head": Kind("adapters.heads.base:Head", "benchmark.heads", "adapters.heads"),
    "filter": Kind("adapters.filters.base:PoisonFilter", "benchmark.filters", "adapters.filters"),
}
ENTRY_POINT_GROUPS = {kind: k.group for kind, k in KINDS.items()}


class Params(BaseModel):
    """Base of every component's parameter model: strict about unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    pass


class Configurable:
    """Base of every component: ``Params`` validated at construction and ``_check_params`` for checks spanning
    several parameters, as ART does; ``kind`` names the component in errors and ``name`` is its registry name."""

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
    """A registered class under the name a suite uses for it (its ``name``, an entry point's, or a path)."""

    kind: str
    name: str
    description: str
    params: type[BaseModel]
    cls: type[Configurable]

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


def base_class(kind: str) -> type[Configurable]:
    """The class every component of ``kind`` subclasses (imported on first use, so this module imports none)."""
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; known: {', '.join(KINDS)}")
    module, _, attr = KINDS[kind].base.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Component]] = {k: {} for k in KINDS}
        self._entry_points_loaded: set[str] = set()

    def add_class(self, kind: str, cls: Any, name: str | None = None) -> Component:
        """Register a component class (``name``, ``description``, ``Params``) under its name or the one given."""
        base = base_class(kind)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ParamError(f"{kind} '{name or cls}' is not a subclass of {base.__module__}.{base.__name__}")
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
            raise ParamError(f"{kind} '{name or cls.name}': its Params is not a pydantic model")
        if not (name or cls.name):
            raise ParamError(f"{kind} class {cls.__module__}.{cls.__name__} has no name")
        comp = Component(kind, name or cls.name, cls.description, cls.Params, cls)
        self._items[kind][comp.name] = comp
        return comp

    def get(self, kind: str, name: str) -> Component:
        """The component registered as ``name``, or the class at the ``module:Class`` path ``name``."""
        self._load(kind)
        if ":" in name and name not in self._items[kind]:
            return self._load_path(kind, name)
        try:
            return self._items[kind][name]
        except KeyError:
            known = ", ".join(sorted(self._items[kind]))
            raise ParamError(f"unknown {kind} '{name}'; known: {known}") from None

    def build(self, kind: str, name: str, params: BaseModel | dict[str, Any] | None = None) -> Any:
        """The component registered as ``name`` (or a ``module:Class`` path), built with ``params`` (ParamError)."""
        comp = self.get(kind, name)
        return comp.cls(**comp.resolve(params).model_dump())

    def names(self, kind: str) -> list[str]:
        self._load(kind)
        return sorted(self._items[kind])

    def items(self, kind: str) -> Iterator[Component]:
        for name in self.names(kind):
            yield self._items[kind][name]

    def _load(self, kind: str) -> None:
        """The built-ins of every kind, then the entry points of ``kind`` (each once)."""
        _load_builtins()
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; known: {', '.join(KINDS)}")
        if kind in self._entry_points_loaded:
            return
        self._entry_points_loaded.add(kind)
        for ep in metadata.entry_points(group=KINDS[kind].group):
            try:
                self.add_class(kind, ep.load(), name=ep.name)
            except Exception as err:  # a broken plugin must not break the benchmark
                warnings.warn(f"could not load {kind} entry point {ep.name!r}: {err}", stacklevel=3)

    def _load_path(self, kind: str, path: str) -> Component:
        module_name, _, attr = path.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (Exception, SystemExit) as err:  # a plugin module may raise anything, or exit, while it is imported
            raise ParamError(f"{kind} path '{path}' cannot be imported: {type(err).__name__}: {err}") from None
        return self.add_class(kind, cls, name=path)


REGISTRY = Registry()


def register(cls: type[Configurable]) -> type[Configurable]:
    """Class decorator: add a built-in component to the registry, under ``cls.name`` in the kind ``cls.kind``."""
    REGISTRY.add_class(cls.kind, cls)
    return cls


def make(kind: str, name: str, params: BaseModel | dict[str, Any] | None = None) -> Any:
    """The ``kind`` component registered as ``name`` (or a ``module:Class`` path), built with ``params``."""
    return REGISTRY.build(kind, name, params)


_builtins_loaded = False


def _load_builtins() -> None:
    """Import the packages that register built-in components (once, lazily, to keep start-up fast)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for kind in KINDS.values():
        importlib.import_module(kind.package)
