"""The command line (``commands``) and the MLflow UI it serves (``ui``, ``ui_app``). Top of the import order:
nothing imports it."""
