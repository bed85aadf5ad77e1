"""A suite: its schema (``schema``), loading and expansion into cells (``load``), bounded YAML (``yaml_bounds``).
Imports ``core`` and the datasets' ``DataSpec``; the engine's other parts import it."""

from benchmark.suite.load import (
    expand,
    load_suite,
    parse_only,
    parse_suite,
    resolve_components,
)
from benchmark.suite.schema import (
    AXES,
    NO_FILTER,
    SWEPT_AXES,
    Cell,
    ComponentSpec,
    ReferenceSpec,
    Resolved,
    Suite,
    sweep_lines,
    sweep_metric,
    sweep_section,
)

__all__ = [
    "AXES",
    "NO_FILTER",
    "SWEPT_AXES",
    "Cell",
    "ComponentSpec",
    "ReferenceSpec",
    "Resolved",
    "Suite",
    "expand",
    "load_suite",
    "parse_only",
    "parse_suite",
    "resolve_components",
    "sweep_lines",
    "sweep_metric",
    "sweep_section",
]
