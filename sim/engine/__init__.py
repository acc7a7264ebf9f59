"""engine: the simulated clock, and the one run pipeline.

engine.py drives the core on SimPy's clock (one process per replica, and with per-replica
queues one that admits each arrival at its moment); service.py holds
the service-time models a simulated batch draws from; pipeline.py assembles every run:
build (streams, traffic, server with fresh policies), simulate, summarise, write, and
the invariant checks of `run --check`.

May import: errors, io, profiles, core, config, workload, metrics. Imported by
experiments, real, validation, api and cli.
"""
