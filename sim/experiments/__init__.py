"""experiments: many runs of one scenario, on Dask.

executor.py is the one Dask executor (a local cluster with Ctrl-C handled by the parent,
or a scheduler's client); sweep.py runs a grid x replications, persisted point by point
and resumable; search.py is recommend's capacity search under an SLO, which decides by
stats.py (intervals; pass, fail or uncertain) and speaks through answer.py (the winner
line and its margin over the noise, recommend.json).

May import: errors, io, config, metrics, engine. Imported by api and cli.
"""
