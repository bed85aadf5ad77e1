"""The components a suite names, one sub-package per kind, each with its base class and its implementations:
``attacks``, ``defenses``, ``filters``, ``backbones``, ``heads``, ``datasets``.

A component imports ``benchmark.core`` (registry, errors, optimisers) and the kinds it consumes (an attack sees a
backbone's features and a head), never the engine (``benchmark.cell``, ``grid``, ``store``, ``report``, ``cli``).
"""
