"""Every kind of component is a Configurable class, registered, listed and built one way."""

from __future__ import annotations

import pytest

from benchmark.core.errors import ParamError
from benchmark.core.registry import (
    ENTRY_POINT_GROUPS,
    KINDS,
    REGISTRY,
    Configurable,
    base_class,
    make,
)

GROUPS = {
    "attack": "benchmark.attacks",
    "defense": "benchmark.defenses",
    "filter": "benchmark.filters",
    "backbone": "benchmark.backbones",
    "head": "benchmark.heads",
    "dataset": "benchmark.datasets",
}


def test_every_kind_has_its_entry_point_group():
    assert ENTRY_POINT_GROUPS == {kind: GROUPS[kind] for kind in KINDS}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_builtin_is_a_class_of_its_kind(kind):
    base = base_class(kind)
    assert issubclass(base, Configurable) and base.kind == kind
    names = REGISTRY.names(kind)
    assert names
    # the built-ins: other tests of this worker may have registered plugins (by path or entry point) before
    builtins = [c for c in REGISTRY.items(kind) if c.cls.__module__.startswith("adapters.")]
    assert builtins
    for comp in builtins:
        assert issubclass(comp.cls, base) and comp.cls.name == comp.name and comp.description
        if "(required)" not in comp.defaults().values():
            built = make(kind, comp.name)
            assert isinstance(built, base) and built.params == comp.params()


def test_a_class_of_another_kind_is_refused_by_path():
    with pytest.raises(ParamError, match=r"backbone 'adapters.heads.linear_svc:LinearSVCHead' is not a subclass of "
                                         r"adapters.backbones.base.Architecture"):
        REGISTRY.get("backbone", "adapters.heads.linear_svc:LinearSVCHead")


def test_a_builtin_by_path_is_the_same_class():
    assert REGISTRY.get("head", "adapters.heads.torch_svm:TorchSVMHead").cls is REGISTRY.get("head", "torch_svm").cls
    assert make("dataset", "adapters.datasets.synthetic:Synthetic", {"n_train": 8}).params.n_train == 8


def test_bad_params_name_the_kind_and_key():
    with pytest.raises(ParamError, match=r"^backbone 'small_cnn': width: Input should be greater than or equal to 1"):
        make("backbone", "small_cnn", {"width": 0})
    with pytest.raises(ParamError, match=r"^dataset 'synthetic': n_trian: unknown key"):
        make("dataset", "synthetic", {"n_trian": 5})
