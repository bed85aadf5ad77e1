"""Where results live: the MLflow tracking layout, the on-disk cache, leases (each cell run once), finished cells
reused across suite versions, the headline metrics. Imports ``core`` only."""
