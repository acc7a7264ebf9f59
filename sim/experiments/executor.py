"""The local Dask cluster that sweeps and recommend run on.

Ctrl-C reaches every process of the terminal's group, so the workers are started with
SIGINT ignored (a disposition that survives their exec): the parent alone handles it,
saves what it has and says so in one line, instead of each worker printing a traceback.
The cluster is closed quietly, also when the parent was interrupted.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any


@contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A Dask client on `workers` local worker processes (one thread each)."""
    from dask.distributed import Client, LocalCluster

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=50,
        )
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    client = Client(cluster)
    try:
        yield client
    finally:
        with suppress(Exception):  # an interrupted parent: nothing more to say about it
            client.close()
        with suppress(Exception):
            cluster.close()
