"""Sweeps: a grid of scenario variants x replications, run on Dask, persisted point by point.

Every finished point is written at once to DIR/points/ as its own Parquet file
(written to a temporary name, then renamed: a killed sweep never leaves a half
file). Rerunning the same sweep skips the points already there, so a sweep resumes
losing at most the points that were in flight. DIR/sweep.json holds a hash of the
base scenario and the grid: a different sweep is refused rather than mixed in.

Replication r of every configuration runs with seed = scenario seed + r: the same
arrivals (and service-time draws) for every configuration of one replication, i.e.
common random numbers, so differences between configurations are paired.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sim.config import ParsedScenario, load, parse
from sim.config.limits import check
from sim.config.schema import SweepSection
from sim.errors import InputError, Interrupted
from sim.experiments.stats import confidence_interval, interval
from sim.io import files
from sim.io.outputs import check_out_dir, replacing, write_text
from sim.metrics.registry import METRICS, flatten

if TYPE_CHECKING:  # pandas and scipy load in a second: not before a refusal
    import pandas as pd


def run_point(
    base: dict[str, Any], base_dir: str, overrides: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Run one configuration with one seed; what a Dask worker executes."""
    from sim.engine import pipeline

    loaded = load(
        base,
        {**overrides, "seed": seed},
        base=Path(base_dir),
        origin="<sweep point>",
        option="grid",
    )
    started = time.perf_counter()
    summary = pipeline.run(loaded).summary
    return {**flatten(summary), "wall_s": time.perf_counter() - started}


def parse_grid(items: Sequence[str], option: str = "grid") -> dict[str, list[Any]]:
    """`KEY=V1,V2,...` (YAML values; `@FILE.yaml` a mapping in a file) -> {key: [values]};
    `option`: the parameter they were given as (grid, space), for error lines."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(
                f"'{item}' is not KEY=V1,V2,... (e.g. policy.max_batch=4,8,16)",
                option=option,
            )
        if not raw.strip():
            raise InputError("needs at least one value", option=option, given=item, field=key)
        # @FILE values: quoted, since YAML reserves a bare "@"
        raw = re.sub(
            r"(^|,)\s*@([^,\[\]{}]+)", lambda m: f'{m.group(1)}"@{m.group(2).strip()}"', raw
        )
        try:
            values = files.parse_yaml(f"[{raw}]", option)
        except InputError:
            raise InputError(
                f"'{raw}' is not a comma-separated list of YAML values", option=option, given=item
            ) from None
        if key in grid:
            raise InputError("the same key is given twice", option=option, given=item, field=key)
        grid[key] = [_from_file(v, option, item) for v in values]
    return grid


def _from_file(value: Any, option: str, given: str) -> Any:
    """`@FILE.yaml`: the YAML mapping in that file (a whole policy section, say)."""
    if not (isinstance(value, str) and value.startswith("@")):
        return value
    data = files.read_yaml(Path(value[1:]), "grid value")
    if not isinstance(data, dict):
        raise InputError(
            f"{value[1:]} must hold a YAML mapping (e.g. a policy)", option=option, given=given
        )
    return data


def label(value: Any) -> Any:
    """A grid value as a short readable label: a mapping with a kind as "kind key=value
    ...", another as "key=value ...", scalars as they are."""
    if isinstance(value, dict):
        parts = [str(value["kind"])] if "kind" in value else []
        parts += [f"{k}={_flat(v)}" for k, v in value.items() if k != "kind"]
        return " ".join(parts)
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return _flat(value)


def _flat(value: Any) -> str:
    if isinstance(value, int | float | str | bool) or value is None:
        return str(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()


@dataclass(frozen=True)
class Point:
    config: int  # index of the configuration in the grid's cartesian product
    replication: int
    overrides: dict[str, Any]

    @property
    def name(self) -> str:
        return f"c{self.config:05d}-r{self.replication:03d}"


class Sweep:
    """A validated sweep plan: base scenario, grid, replications, output folder."""

    def __init__(
        self,
        scenario_path: str | Path,
        grid: dict[str, list[Any]],
        replications: int | None,
        out: str | Path,
        overrides: Sequence[str] = (),
    ):
        self.scenario_path = Path(scenario_path)
        # the base scenario, --set applied, validated whole (its sweep: section too)
        parsed = parse(self.scenario_path, list(overrides))
        section = parsed.scenario.sweep or SweepSection()
        self.grid = {**section.grid, **grid}
        if replications is not None and replications < 1:
            raise InputError("must be >= 1", option="replications")
        self.replications = replications or section.replications
        self.base = {k: v for k, v in parsed.data.items() if k != "sweep"}
        self.base_dir = str(parsed.base)
        self.out = Path(out)
        check_out_dir(self.out)
        if self.points_dir.exists() and not self.points_dir.is_dir():
            raise InputError(
                "holds a file named 'points' where a sweep keeps its points' folder; give a "
                "new or empty folder",
                option="out",
                given=str(self.out),
            )
        self.base_seed = parsed.scenario.seed
        self._check_size(parsed)
        self.configs = self._expand()
        self._validate()
        self.hash = hashlib.sha256(
            json.dumps({"base": self.base, "grid": self.grid}, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]

    def _check_size(self, parsed: ParsedScenario) -> None:
        """The grid x replications is within the scenario's limits, before it is listed."""
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise InputError("needs at least one value", option="grid", given=key, field=key)
        points = math.prod(len(v) for v in self.grid.values()) * self.replications
        what = "{n} sweep points (configurations x replications)"
        check("max_points", points, parsed.scenario.limits, what, option="grid", field=None)

    def _expand(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [
            dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())
        ]

    def _validate(self) -> None:
        """Every configuration must load (schema, profile, policy vs profile) before any work."""
        for config in self.configs:
            load(self.base, config, base=Path(self.base_dir), origin=str(self.scenario_path),
                 option="grid")  # fmt: skip

    def points(self) -> list[Point]:
        return [
            Point(c, r, config)
            for r in range(self.replications)
            for c, config in enumerate(self.configs)
        ]

    # ---- persistence --------------------------------------------------------------------
    @property
    def points_dir(self) -> Path:
        return self.out / "points"

    def prepare_out(self) -> None:
        """Create DIR, or check that DIR holds this same sweep."""
        meta_path = self.out / "sweep.json"
        if meta_path.exists():
            try:
                meta = files.read_json(meta_path, "sweep.json")
            except InputError as exc:
                raise InputError(
                    f"{exc.message}: the sweep's record is damaged. If the scenario and grid "
                    "are unchanged, delete sweep.json to resume with the points already done; "
                    "otherwise use a new {out} folder",
                    source=str(meta_path),
                    mentions=("out",),
                ) from None
            if not isinstance(meta, dict) or meta.get("hash") != self.hash:
                raise InputError(
                    "holds a different sweep (scenario or grid changed); use a new {out} folder",
                    source=str(self.out),
                    mentions=("out",),
                )
        self.points_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.points_dir.glob("*.tmp"):
            stale.unlink()  # a write a kill interrupted
        meta = {
            "hash": self.hash,
            "scenario": str(self.scenario_path),
            "grid": self.grid,
            "replications": self.replications,
            "base_seed": self.base_seed,
            "base": self.base,
        }
        write_text(meta_path, json.dumps(meta, indent=2, default=str) + "\n")

    def done(self) -> set[str]:
        """The points already written whole; a damaged point file is removed (with a
        warning) so that its point is computed again."""
        import pyarrow.parquet as pq

        names = set()
        for path in sorted(self.points_dir.glob("*.parquet")):
            try:
                pq.read_metadata(path)
            except Exception as exc:  # any damage: pyarrow raises several kinds
                warn(f"{path} is damaged ({type(exc).__name__}); computing that point again")
                path.unlink()
                continue
            names.add(path.stem)
        return names

    def write_point(self, point: Point, result: dict[str, Any]) -> None:
        row = {
            "point": point.name,
            "config": point.config,
            "replication": point.replication,
            "seed": self.base_seed + point.replication,
            **{f"grid.{k}": _cell(v) for k, v in point.overrides.items()},
            **result,
        }
        final = self.points_dir / f"{point.name}.parquet"
        tmp = final.with_suffix(".tmp")
        import pandas as pd

        pd.DataFrame([row]).to_parquet(tmp, index=False)
        os.replace(tmp, final)  # atomic: a point is either there whole or not at all

    def results(self) -> pd.DataFrame:
        import pandas as pd

        files = sorted(self.points_dir.glob("*.parquet"))
        if not files:
            return pd.DataFrame()
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        return frame.sort_values(["config", "replication"]).reset_index(drop=True)


def _cell(value: Any) -> Any:
    """Grid values as Parquet cells: scalars stay, structures become their labels."""
    return label(value)


def summarize_sweep(
    results: pd.DataFrame, grid_keys: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    import pandas as pd

    """Per configuration: each metric's mean, the Student t half-width of its 95% interval
    (`_ci95`) and the interval recommend decides by (`_lo`, `_hi`: on the log scale for
    positive figures, cut to [0, 1] for shares; sim.experiments.stats). And paired
    differences of each configuration against configuration 0 (same replication = same
    random numbers)."""
    grid_cols = [f"grid.{k}" for k in grid_keys]
    rows, diffs = [], []
    base = results[results.config == 0].set_index("replication")
    for config, group in results.groupby("config", sort=True):
        row: dict[str, Any] = {"config": config, "replications": len(group)}
        row.update({c: group[c].iloc[0] for c in grid_cols})
        drow: dict[str, Any] = dict(row)
        # every column is in both: suffix them all (join's rsuffix is deprecated)
        paired = group.set_index("replication").join(base.add_suffix("_base"), how="inner")
        for metric in METRICS:  # every figure of the metrics registry the points have
            if metric not in group or group[metric].isna().all():
                continue
            values = group[metric].tolist()
            mean, half = confidence_interval(values)
            row[f"{metric}"] = mean
            row[f"{metric}_ci95"] = half
            # the interval recommend decides by: skew-aware, never outside the metric's range
            iv = interval(values, METRICS[metric].unit)
            row[f"{metric}_lo"], row[f"{metric}_hi"] = iv.lo, iv.hi
            if config != 0 and f"{metric}_base" in paired:
                d_mean, d_half = confidence_interval(
                    (paired[metric] - paired[f"{metric}_base"]).tolist()
                )
                drow[f"{metric}_diff"] = d_mean
                drow[f"{metric}_diff_ci95"] = d_half
        rows.append(row)
        if config != 0:
            diffs.append(drow)
    return pd.DataFrame(rows), pd.DataFrame(diffs)


def connect(address: str, timeout_s: float = 5.0) -> Any:
    """A Dask client of the scheduler at `address`, or one line saying why not."""
    from dask.distributed import Client
    from distributed.comm import parse_address

    try:
        parse_address(address if "://" in address else f"tcp://{address}")
        host_port = address.split("://", 1)[-1]
        if ":" not in host_port or not host_port.rsplit(":", 1)[1].isdigit():
            raise ValueError("no port")
    except ValueError:
        raise InputError(
            f"'{address}' is not a scheduler address (e.g. tcp://127.0.0.1:8786)",
            option="scheduler",
        ) from None
    try:
        return Client(address, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s "
            f"({type(exc).__name__})",
            option="scheduler",
        ) from None


def warn(message: str) -> None:
    print(f"batchsim: warning: {message}", file=sys.stderr)


def run_sweep(
    sweep: Sweep,
    workers: int | None = None,
    scheduler: str | Any | None = None,
    on_result: Callable[[Point, dict[str, Any] | None, int, int], None] | None = None,
) -> pd.DataFrame:
    """Run every missing point on Dask, writing each as it finishes; return all results."""
    sweep.prepare_out()
    done = sweep.done()
    todo = [p for p in sweep.points() if p.name not in done]
    total = len(sweep.points())
    finished = total - len(todo)
    if on_result is not None:
        on_result(None, None, finished, total)
    if todo:
        from sim.experiments.executor import fan_out

        if isinstance(scheduler, str):  # an address, or a client already connected to it
            scheduler = connect(scheduler)
        before = finished
        jobs = [(sweep.base, sweep.base_dir, p.overrides, sweep.base_seed + p.replication)
                for p in todo]  # fmt: skip
        keys = [f"batchsim-{sweep.hash}-{p.name}" for p in todo]
        results = fan_out(run_point, jobs, workers or os.cpu_count() or 1, scheduler, keys)
        try:
            with closing(results):  # the cluster closes at once, also on Ctrl-C
                for i, result in results:
                    sweep.write_point(todo[i], result)
                    finished += 1
                    if on_result is not None:
                        on_result(todo[i], result, finished, total)
        except KeyboardInterrupt:
            saved = len(sweep.done())  # what is on disk (a point may land as Ctrl-C comes)
            raise Interrupted(
                f"{saved:,} of {total:,} points are saved in {sweep.out} ({saved - before:,} "
                "new); run the same command again to go on from there"
            ) from None
    results = sweep.results()
    summary, diffs = summarize_sweep(results, list(sweep.grid))
    with replacing(sweep.out / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    with replacing(sweep.out / "summary.parquet") as tmp:
        summary.to_parquet(tmp, index=False)
    with replacing(sweep.out / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    if not diffs.empty:
        with replacing(sweep.out / "paired_differences.csv") as tmp:
            diffs.to_csv(tmp, index=False)
    return results
