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


SHOWN_CHARS = 60  # a value echoed in a message: enough to recognise it, never the megabytes an alias bomb expands to


def short(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as a message shows it: its text (``repr`` for anything but a string), cut to ``limit`` characters.

    Containers are cut while they are written (``reprlib``), so a huge nested value costs no more than its prefix."""
    import reprlib

    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother = 3, limit, limit
    shown.maxlist = shown.maxdict = shown.maxtuple = shown.maxset = 8
    text = value if isinstance(value, str) else shown.repr(value)
    text = " ".join(text.split())  # one line, whatever the value holds
    return text if len(text) <= limit else text[: limit - 3] + "..."
