"""The one Dask executor of sweeps and recommend: `fan_out` runs a function over jobs on a
local cluster (or a client already connected), yielding each result as it finishes.

Ctrl-C reaches every process of the terminal's group, so the workers are started with
SIGINT ignored (a disposition that survives their exec): the parent alone handles it,
saves what it has and says so in one line, instead of each worker printing a traceback.
The cluster is closed quietly, also when the parent was interrupted.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

_POLL_S = 0.05  # how often a fan-out waiting for results looks for a Ctrl-C


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
            # any free port: with None the scheduler still served HTTP on 8787, a fixed port
            # that a second cluster on the machine (another test, another user) collides on
            dashboard_address=":0",
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


def fan_out(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    workers: int = 1,
    client: Any | None = None,
    keys: Sequence[str] | None = None,
) -> Iterator[tuple[int, Any]]:
    """`fn(*job)` for every job on Dask: on `client` (closed at the end), else on a local
    cluster of `workers` processes; yields (the job's index, its result) as each finishes.
    `keys`: the tasks' names (a resumed sweep's points keep theirs).

    Ctrl-C while it waits raises KeyboardInterrupt here, between results: the signal only
    sets a flag, which the wait polls. Python's own handler raises wherever the main thread
    is, and a Ctrl-C that lands in one of distributed's garbage-collection callbacks was
    swallowed there ("Exception ignored"), so the sweep ran on to the end."""
    from dask.distributed import as_completed

    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set()) if main else None
    try:
        with client if client is not None else local_cluster(workers) as connected:
            futures = {
                connected.submit(fn, *job, pure=False, **({"key": keys[i]} if keys else {})): i
                for i, job in enumerate(jobs)
            }
            finished = as_completed(futures)
            while not finished.is_empty():
                if stop.is_set():
                    raise KeyboardInterrupt
                if not finished.has_ready():
                    stop.wait(_POLL_S)
                    continue
                for future in finished.next_batch(block=False):
                    yield futures[future], future.result()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
