"""One cell, as a sequence of named stages (``pipeline``): backbone training, features, the task, the clean head, the
attack (a cached stage), the filter, the poisoned heads, outcomes, robust accuracy. Imports ``core``, ``store``,
``suite`` and ``adapters``; never ``grid``, ``report`` or ``cli``."""
