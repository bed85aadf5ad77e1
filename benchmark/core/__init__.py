"""What every part of the project may import: the component registry, errors, stable hashing, stage versions,
statistics, L-inf optimisers, progress bars and signal handling. Imports nothing of the project outside ``core``."""
