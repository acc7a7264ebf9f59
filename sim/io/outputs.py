"""Writing outputs: every --out is checked before any work, and written whole or not at all.

A run folder is staged beside its final place and swapped in with one rename, so a run
killed while writing leaves the old folder or the new one, never a mix, and nothing of
an earlier run that this run does not write (a stale robots.parquet) stays beside it.
Single files (a profile, recommend.json, sweep.json, a plot) are written to a temporary
name and renamed over the old one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from sim.errors import InputError

# what `batchsim run --out` writes (plots/ is batchsim plot's): a folder holding only these
# may be replaced by a new run; one holding anything else is the user's, and is refused
RUN_FILES = frozenset(
    {
        "summary.json",
        "requests.parquet",
        "batches.parquet",
        "robots.parquet",
        "round_trips.parquet",
        "scenario.yaml",
        "run.json",
        "plots",
    }
)
OUTPUT_FOLDERS = frozenset({"plots"})  # the owned names that are folders (the rest: files)


def _writable_ancestor(path: Path, option: str) -> None:
    """Every existing ancestor is a folder, and the nearest one may be written."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    for ancestor in path.parents:
        if ancestor.exists() and not ancestor.is_dir():
            raise InputError(f"sits inside a file ({ancestor})", option=option, given=str(path))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot be written: {parent} is not writable (permission denied)",
            option=option,
            given=str(path),
        )


def check_out_dir(path: Path, option: str = "out", owned: frozenset[str] | None = None) -> None:
    """`path` can be made (or is) an output folder. With `owned`, an existing folder may
    only hold those names (it is replaced whole)."""
    _writable_ancestor(path, option)
    if path.exists():
        if not path.is_dir():
            raise InputError("is a file; it must be a folder", option=option, given=str(path))
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(
                "cannot be written (permission denied)", option=option, given=str(path)
            )
        if owned is not None:
            wrong_kind = sorted(
                p.name
                for p in path.iterdir()
                if p.name in owned and p.is_dir() != (p.name in OUTPUT_FOLDERS)
            )
            if wrong_kind:
                name = wrong_kind[0]
                kind = "a file" if name in OUTPUT_FOLDERS else "a folder"
                raise InputError(
                    f"holds {kind} named {name}, which a run writes as "
                    f"{'a folder' if name in OUTPUT_FOLDERS else 'a file'}; give a new or "
                    "empty folder",
                    option=option,
                    given=str(path),
                )
            foreign = sorted(p.name for p in path.iterdir() if p.name not in owned)
            if foreign:
                shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise InputError(
                    f"holds files that are not a run's outputs ({shown}); a run replaces its "
                    "folder whole, so give a new or empty folder",
                    option=option,
                    given=str(path),
                )


def check_out_file(path: Path, option: str = "out") -> None:
    """`path` can be written as a file."""
    _writable_ancestor(path, option)
    if path.is_dir():
        raise InputError("is a folder; it must be a file path", option=option, given=str(path))
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError("cannot be written (permission denied)", option=option, given=str(path))


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A fresh folder beside `final` to write into; when the block ends without error it
    replaces `final` in one step (the old one is then removed). On error it is removed."""
    final = final.absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a run killed while writing
    staging = final.parent / f".{final.name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not final.exists():
        os.rename(staging, final)
        return
    if not _exchange(staging, final):
        # no atomic exchange here: two renames, with a moment in between with no folder
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.rename(final, old)
        os.rename(staging, final)
        staging = old
    shutil.rmtree(staging, ignore_errors=True)  # now the old run


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextlib.contextmanager
def replacing(final: Path) -> Iterator[Path]:
    """A temporary path beside `final` to write one file to; renamed over `final` when the
    block ends without error, removed otherwise."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # the suffix stays last: writers that choose a format by it (savefig) still can
    tmp = final.with_name(f".{final.stem}.partial-{os.getpid()}{final.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_text(path: Path, text: str) -> None:
    """Write a text file whole (or leave the old one)."""
    with replacing(path) as tmp:
        tmp.write_text(text)
