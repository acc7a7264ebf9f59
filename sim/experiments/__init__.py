"""experiments: many runs of one scenario, on Dask.

executor.py is the one Dask executor (a local cluster with Ctrl-C handled by the parent,
or a scheduler's client); sweep.py runs a grid x replications, persisted point by point
and resumable; search.py is recommend's capacity search under an SLO.

May import: errors, io, config, metrics, engine. Imported by api and cli.
"""
