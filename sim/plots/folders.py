"""`batchsim plot DIR`: the figures of a run folder or a sweep folder, read from its files,
into DIR/plots/ (one file per figure and parameter set, named by what it draws)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sim.errors import InputError
from sim.io import files
from sim.io.files import read_parquet
from sim.io.outputs import check_out_dir
from sim.plots.figures import (
    attainment_vs_load,
    batch_size_hist,
    describe_setup,
    frontier,
    gantt,
    latency_cdfs,
    metric_plot,
    round_trip_cdfs,
    save,
    titles,
)


def _name(y: str, x: str, hue: str | None) -> str:
    """One file per figure and parameter set: what is drawn against what, by what."""
    key = lambda c: c.removeprefix("grid.")  # noqa: E731
    return f"{key(y)}_vs_{key(x)}" + (f"_by_{key(hue)}" if hue else "") + ".png"


def _sweep_subtitle(folder: Path) -> str:
    """The sweep's scenario, profile and SLO, from sweep.json (nothing when it cannot say)."""
    from sim.config import load
    from sim.io.files import read_json

    try:
        meta = read_json(folder / "sweep.json", "sweep")
        base = meta["base"]
        loaded = load(base, base=Path(meta["scenario"]).parent, origin=meta["scenario"])
    except (InputError, KeyError, TypeError):
        return ""
    return describe_setup(
        loaded.scenario.name,
        dict(loaded.profile.provenance),
        loaded.scenario.slo.latency_ms,
        source=loaded.profile.source,
    )


def plot_dir(
    folder: str | Path,
    hue: str | None = None,
    load: str | None = None,
    x: str | None = None,
    y: str | None = None,
) -> list[Path]:
    """Figures for a sweep folder (sweep.json) or a run folder (summary.json) into
    FOLDER/plots, one file per figure and parameter set. A sweep: the latency-throughput
    frontier, attainment against the load key, a robot fleet's stall against the swept
    key, and with `x` and `y` any metric against any swept key (or metric)."""
    from sim.metrics.registry import METRICS

    folder = Path(folder)
    out = folder / "plots"
    written: list[Path] = []
    check_out_dir(out, "plot")
    if (folder / "sweep.json").exists():
        summary = _table(
            folder / "summary.parquet", "sweep summary", ("throughput_rps", "latency_p99_ms")
        )
        keys = [c for c in summary.columns if c.startswith("grid.")]
        hue = _grid_col(hue, keys) if hue else _default_hue(summary, keys)
        subtitle = _sweep_subtitle(folder)
        if x is not None or y is not None:
            if x is None or y is None:
                raise InputError("give both x and y", option="x/y")
            if y not in METRICS or y not in summary:
                raise InputError(
                    f"'{y}' is not a metric of this sweep; e.g. "
                    + ", ".join(m for m in METRICS if m in summary)[:300],
                    option="y",
                )
            x_metric = x in METRICS and x in summary
            x_col = x if x_metric else _grid_col(x, keys)
            other = hue if hue != x_col else None
            fig = metric_plot(summary, x_col, y, other, subtitle, x_is_metric=x_metric)
            return [save(fig, out / _name(y, x_col, other))]
        # the points of each line are joined in the order of the key that varies along it
        along = next((k for k in keys if summary[k].nunique() > 1 and k != hue), None)
        written.append(
            save(
                frontier(summary, hue, subtitle=subtitle, along=along),
                out / _name("latency_p99_ms", "throughput_rps", hue),
            )  # fmt: skip
        )
        load = (
            _grid_col(load, keys)
            if load
            else next(
                (k for k in keys if k.endswith(LOAD_SUFFIXES) and summary[k].nunique() > 1), None
            )
        )
        if (
            load is not None
            and "slo_attainment" in summary
            and summary["slo_attainment"].notna().any()
        ):
            other = hue if hue != load else None
            fig = attainment_vs_load(summary, load, other)
            titles(fig.axes[0], "SLO attainment vs load", subtitle)
            fig.tight_layout()
            written.append(save(fig, out / _name("slo_attainment", load, other)))
        varying = [k for k in keys if summary[k].nunique() > 1 and k != hue]
        if (
            "robots_stall_fraction" in summary
            and summary["robots_stall_fraction"].notna().any()
            and varying
        ):
            along = varying[0]
            fig = metric_plot(
                summary, along, "robots_stall_fraction", hue if hue != along else None, subtitle
            )
            written.append(
                save(
                    fig, out / _name("robots_stall_fraction", along, hue if hue != along else None)
                )
            )
        return written
    if (folder / "summary.json").exists():
        from sim.io.files import read_json

        summary_json = read_json(folder / "summary.json", "summary")
        if x is not None or y is not None:
            raise InputError("x and y are for sweep folders", option="x/y")
        subtitle = describe_setup(
            str(summary_json.get("scenario", folder.name)),
            dict((summary_json.get("profile") or {}).get("provenance") or {}),
            (summary_json.get("slo") or {}).get("latency_ms"),
            source=str((summary_json.get("profile") or {}).get("source", "")),
        )
        requests = _table(folder / "requests.parquet", "run's requests", REQUEST_COLUMNS)
        batches = _table(folder / "batches.parquet", "run's batches", BATCH_COLUMNS)
        # the table's window: requests that arrived, and batches that started, after the
        # warm-up of the scenario the folder was made with (0 when it does not say)
        warmup_s = files.warmup_of(files.run_scenario(folder)) or 0.0
        window = f", after the {warmup_s:g} s warm-up" if warmup_s else ""
        measured = batches[batches.start >= warmup_s]
        middle = float(measured.start.median()) if len(measured) else None
        figures = [
            (latency_cdfs({folder.name: requests}, warmup_s), "latency_cdf.png",
             f"server latency CDF{window}"),
            (batch_size_hist(measured), "batch_sizes.png", f"batch sizes{window}"),
            (gantt(batches, middle), "gantt.png", f"one second of batches per replica{window}"),
        ]  # fmt: skip
        if (folder / "round_trips.parquet").exists():  # a fleet: what the robots waited
            trips = _table(
                folder / "round_trips.parquet",
                "run's round trips",
                ("robot", "group", "round_trip_ms"),
            )
            figures.append((round_trip_cdfs(trips), "round_trip_cdf.png", "robot round-trip CDF"))
        for fig, name, title in figures:
            titles(fig.axes[0], title, subtitle)
            fig.tight_layout()  # room for the title
            written.append(save(fig, out / name))
        return written
    raise InputError(
        "is neither a run folder (summary.json) nor a sweep folder (sweep.json)", source=str(folder)
    )


# swept keys that move the offered load: a sweep of one draws attainment against it
LOAD_SUFFIXES = ("rate_rps", "rate_hz", "count")
BATCH_COLUMNS = ("replica", "start", "end", "size", "padded_size")
REQUEST_COLUMNS = ("arrival", "completion", "outcome")


def _table(path: Path, what: str, columns: Sequence[str]) -> pd.DataFrame:
    """A table a run or a sweep wrote, with the columns the figures read."""
    frame = read_parquet(path, f"{what} Parquet")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"has no column {', '.join(missing)}: it is not a batchsim {what} table",
            source=str(path),
        )
    return frame


def _grid_col(key: str, keys: Sequence[str]) -> str:
    col = key if key.startswith("grid.") else f"grid.{key}"
    if col not in keys:
        raise InputError(
            f"'{key}' is not a swept key; swept: {', '.join(k[5:] for k in keys)}",
            option="hue/load",
        )
    return col


def _default_hue(summary: pd.DataFrame, keys: Sequence[str]) -> str | None:
    """The swept key with the fewest values (the others vary along the line)."""
    varying = [k for k in keys if summary[k].nunique() > 1]
    if len(varying) < 2:
        return None
    return min(varying, key=lambda k: summary[k].nunique())
