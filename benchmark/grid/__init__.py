"""The grid of cells: checks before a run (data, feasibility, time estimate), the runner, its local and Ray
executors. Imports ``core``, ``suite``, ``store``, ``cell`` and ``adapters``; never ``report`` or ``cli``."""
