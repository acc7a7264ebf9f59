"""Run `batchsim ARGS` in a child process under a memory cap and a timeout, cheaply.

Children are forked from a server process that has already imported the CLI, so each run
costs milliseconds, not the half second of a fresh interpreter; a memory blow-up, a hang
or a crash stays in the child and is reported as its outcome. Used by the bad-input
tests (tests/test_bad_input.py).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

_CONTEXT = mp.get_context("forkserver")
_CONTEXT.set_forkserver_preload(
    ["sim.cli", "sim.config", "sim.engine.pipeline", "pandas", "pyarrow"]
)


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None: killed (timeout) or crashed by a signal
    stderr: str
    stdout: str
    timed_out: bool

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def describe(self) -> str:
        return f"exit {self.exit_code}, timed_out={self.timed_out}, stderr={self.stderr[-800:]!r}"


NOBODY = 65534  # the unprivileged user a root test run drops to (root reads every file)


def _child(
    argv: list[str], cwd: str, mem_mb: int, err_path: str, out_path: str, unprivileged: bool
) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
    if unprivileged and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    os.chdir(cwd)
    os.environ["COLUMNS"] = "200"
    err = os.open(err_path, os.O_WRONLY)
    out = os.open(out_path, os.O_WRONLY)
    os.dup2(err, 2)
    os.dup2(out, 1)
    import sys

    from sim.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # click may exit by itself (--help)
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_isolated(
    *args: str,
    cwd: Path,
    mem_mb: int = 3072,
    timeout_s: float = 20.0,
    unprivileged: bool = False,
) -> Outcome:
    """`batchsim ARGS` in a forked child: its exit code, stderr and stdout. `unprivileged`:
    as an ordinary user (a root test run drops to nobody), so file permissions hold."""
    with tempfile.TemporaryDirectory() as tmp:
        err_path, out_path = Path(tmp, "stderr"), Path(tmp, "stdout")
        for path in (err_path, out_path):
            path.touch()
            path.chmod(0o666)  # an unprivileged child writes them
        os.chmod(tmp, 0o777)
        child = _CONTEXT.Process(
            target=_child,
            args=(list(args), str(cwd), mem_mb, str(err_path), str(out_path), unprivileged),
        )
        child.start()
        child.join(timeout_s)
        timed_out = child.is_alive()
        if timed_out:
            os.kill(child.pid, signal.SIGKILL)
            child.join()
        code = child.exitcode
        return Outcome(
            None if timed_out or (code is not None and code < 0) else code,
            err_path.read_text(errors="replace"),
            out_path.read_text(errors="replace"),
            timed_out,
        )
