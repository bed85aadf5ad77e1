"""User-facing errors: each one prints as a single line, without a traceback."""


class BenchmarkError(Exception):
    """An error caused by the user's input (suite, data, flags); the CLI prints it as one line, exit 2."""

    exit_code = 2


class StoreError(BenchmarkError):
    """The tracking store failed while the grid ran: exit 3, distinct from a failed cell (1) and bad input (2)."""

    exit_code = 3


class SuiteError(BenchmarkError):
    """A suite file that cannot be loaded or validated."""


class DataError(BenchmarkError):
    """A dataset that is missing, malformed or misconfigured."""


class ParamError(BenchmarkError, ValueError):
    """A component (attack, defense, dataset, backbone) built with invalid parameters."""


class BudgetError(RuntimeError):
    """A poison set that breaks its budget (L-inf eps, pixel range, count); fails the cell."""


class AttackError(RuntimeError):
    """An attack that raised something other than an Exception (sys.exit...) or returned no PoisonResult."""


class TrainingDiverged(RuntimeError):
    """A NaN or infinite loss during training; fails the cell with that reason."""
