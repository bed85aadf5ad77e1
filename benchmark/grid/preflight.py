"""What ``run`` checks before it creates any run: the suite's data is there, and a GPU-sized suite is not started
on a CPU by accident. Either problem is one line and exit 2, with the store untouched."""

from __future__ import annotations

from benchmark import COMMAND
from benchmark.core.errors import BenchmarkError
from benchmark.grid.data_check import ensure_data
from benchmark.grid.estimate import estimate
from benchmark.grid.feasibility import check_feasible
from benchmark.suite import Cell, Suite

# A suite that would take longer than this on the CPU, where it asked for a GPU (device auto or cuda) and none is
# here, needs --device cpu or --yes: the smoke suite (minutes) starts as is, the paper's grid (CPU-months) does not.
CPU_CONFIRM_HOURS = 1.0


def preflight(
    suite: Suite,
    cells: list[Cell],
    source: str,
    device_flag: str | None,
    data_root: str | None,
    download: bool = False,
    yes: bool = False,
) -> None:
    ensure_data(suite, source, data_root, download=download, labels={c.dataset for c in cells})
    check_feasible(suite, cells, source)  # classes, limits, poison counts, filters and triggers against the data
    if not yes:
        check_cpu_fallback(suite, cells, source, device_flag)


def check_cpu_fallback(suite: Suite, cells: list[Cell], source: str, device_flag: str | None) -> None:
    """Raise when the suite wants a GPU, there is none, and the CPU would take more than CPU_CONFIRM_HOURS."""
    import torch

    choice = device_flag or suite.device
    if choice == "cpu" or torch.cuda.is_available():
        return
    hours = estimate(suite, cells, gpu=False).total / 3600
    if hours <= CPU_CONFIRM_HOURS:
        return
    raise BenchmarkError(
        f"{source}: the suite is sized for a GPU (device: {choice}) and this machine has none; on its CPU it would "
        f"take about {hours:,.0f} CPU-hours (`{COMMAND} run {source} --dry-run` shows the estimate); add "
        "--device cpu to run it on the CPU anyway, or --yes"
    )
