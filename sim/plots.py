"""Seaborn figures of runs and sweeps; each function returns the matplotlib Figure it drew."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from sim.errors import InputError  # noqa: E402
from sim.files import read_parquet  # noqa: E402
from sim.outputs import check_out_dir, replacing  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def frontier(
    summary: pd.DataFrame,
    hue: str | None = None,
    x: str = "throughput_rps",
    y: str = "latency_p99_ms",
):
    """Latency vs throughput per configuration, with 95% CI bars; one line per `hue` value."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = [(None, summary)] if hue is None else list(summary.groupby(hue, sort=True))
    palette = sns.color_palette("colorblind", max(len(groups), 1))
    for color, (label, group) in zip(palette, groups, strict=False):
        group = group.sort_values(x)
        ax.errorbar(
            group[x],
            group[y],
            xerr=group.get(f"{x}_ci95"),
            yerr=group.get(f"{y}_ci95"),
            fmt="o-",
            color=color,
            capsize=3,
            label=None if label is None else f"{hue.removeprefix('grid.')}={label}",
        )
        lo = group[y] - group.get(f"{y}_ci95", 0).fillna(0)
        hi = group[y] + group.get(f"{y}_ci95", 0).fillna(0)
        ax.fill_between(group[x], lo, hi, color=color, alpha=0.15)
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel(y.replace("_ms", " (ms)").replace("_", " "))
    values = summary[y].dropna()
    if len(values) and values.min() > 0 and values.max() / values.min() > 30:
        ax.set_yscale("log")  # overloaded points would flatten the rest
    ax.set_title("latency vs throughput (mean, 95% CI over replications)")
    if hue is not None:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def attainment_vs_load(summary: pd.DataFrame, load: str, hue: str | None = None):
    """SLO attainment against the swept load key, one line per `hue` value."""
    if "slo_attainment" not in summary:
        raise InputError("the sweep has no SLO attainment (set slo.latency_ms)", field="slo")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = [(None, summary)] if hue is None else list(summary.groupby(hue, sort=True))
    for (label, group), color in zip(
        groups, sns.color_palette("colorblind", len(groups)), strict=False
    ):
        group = group.sort_values(load)
        ax.errorbar(group[load], group["slo_attainment"], yerr=group.get("slo_attainment_ci95"),
                    fmt="o-", capsize=3, color=color,
                    label=None if label is None else f"{hue.removeprefix('grid.')}={label}")  # fmt: skip
    ax.set_xlabel(load.removeprefix("grid."))
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(-0.02, 1.02)
    if hue is not None:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def latency_cdfs(runs: dict[str, pd.DataFrame]):
    """Empirical CDFs of request latency (ms), one line per labelled requests table."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, requests in runs.items():
        done = requests[requests.outcome == "completed"]
        latency = np.sort((done.completion - done.arrival).to_numpy() * 1000)
        if latency.size:
            ax.plot(latency, np.arange(1, latency.size + 1) / latency.size, label=label)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def batch_size_hist(batches: pd.DataFrame):
    """How often each batch size ran (real and padded)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = sorted(set(batches["size"]) | set(batches["padded_size"]))
    counts = pd.DataFrame(
        {
            "size": sizes * 2,
            "batches": [int((batches["size"] == s).sum()) for s in sizes]
            + [int((batches["padded_size"] == s).sum()) for s in sizes],
            "kind": ["requests in batch"] * len(sizes) + ["padded size"] * len(sizes),
        }
    )
    if (batches["size"] == batches["padded_size"]).all():
        counts = counts[counts.kind == "requests in batch"]
    sns.barplot(counts, x="size", y="batches", hue="kind", ax=ax)
    ax.set_xlabel("batch size")
    fig.tight_layout()
    return fig


def gantt(batches: pd.DataFrame, start_s: float | None = None, span_s: float = 1.0):
    """Per-replica timeline of batches in [start, start + span): who ran what, when."""
    if start_s is None:
        start_s = float(batches.start.median()) if len(batches) else 0.0
    window = batches[(batches.end > start_s) & (batches.start < start_s + span_s)]
    replicas = sorted(batches.replica.unique()) if len(batches) else [0]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * len(replicas)))
    cmap = plt.get_cmap("viridis")
    top = max(int(batches["size"].max()), 1) if len(batches) else 1
    for row in window.itertuples():
        ax.barh(row.replica, (row.end - row.start) * 1000, left=(row.start - start_s) * 1000,
                color=cmap(row.size / top), edgecolor="white", height=0.6)  # fmt: skip
        if (row.end - row.start) / span_s > 0.03:
            ax.text((row.start - start_s + (row.end - row.start) / 2) * 1000, row.replica, str(row.size),
                    ha="center", va="center", fontsize=7, color="white")  # fmt: skip
    ax.set_yticks(replicas, [f"replica {r}" for r in replicas])
    ax.set_xlim(0, span_s * 1000)
    ax.set_xlabel(f"time (ms) from t = {start_s:.3f} s; numbers: requests in the batch")
    fig.tight_layout()
    return fig


def profile_figure(frame: pd.DataFrame, title: str = ""):
    """Latency and per-request latency vs batch size (every sample, median line) and peak memory."""
    frame = frame.copy()
    frame["per_request_ms"] = frame.latency_ms / frame.batch_size
    hue = "cameras" if "cameras" in frame and frame.cameras.nunique() > 1 else None
    panels = 3 if "peak_mem_mb" in frame else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8))
    for ax, y, label in (
        (axes[0], "latency_ms", "latency (ms)"),
        (axes[1], "per_request_ms", "latency per request (ms)"),
    ):
        sns.stripplot(
            frame, x="batch_size", y=y, hue=hue, ax=ax, size=3, alpha=0.5, dodge=False, legend=False
        )
        sns.pointplot(frame, x="batch_size", y=y, hue=hue, ax=ax, estimator="median", errorbar=None,
                      markers="_", linestyles="-", legend=ax is axes[0] and hue is not None)  # fmt: skip
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
    if panels == 3:
        mem = frame.groupby(["batch_size", *([hue] if hue else [])], as_index=False)[
            "peak_mem_mb"
        ].max()
        sns.pointplot(mem, x="batch_size", y="peak_mem_mb", hue=hue, ax=axes[2], legend=False)
        axes[2].set_xlabel("batch size")
        axes[2].set_ylabel("peak memory (MiB)")
    fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> Path:
    """Write a figure whole (or leave the old one) and close it."""
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path


def plot_dir(folder: str | Path, hue: str | None = None, load: str | None = None) -> list[Path]:
    """Figures for a sweep folder (sweep.json) or a run folder (summary.json) into FOLDER/plots."""
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
        written.append(save(frontier(summary, hue), out / "frontier.png"))
        load = (
            _grid_col(load, keys)
            if load
            else next((k for k in keys if k.endswith(("rate_rps", "rate_hz", "count"))), None)
        )
        if (
            load is not None
            and "slo_attainment" in summary
            and summary["slo_attainment"].notna().any()
        ):
            other = hue if hue != load else None
            written.append(
                save(attainment_vs_load(summary, load, other), out / "attainment_vs_load.png")
            )
        return written
    if (folder / "summary.json").exists():
        requests = _table(folder / "requests.parquet", "run's requests", REQUEST_COLUMNS)
        batches = _table(folder / "batches.parquet", "run's batches", BATCH_COLUMNS)
        written.append(save(latency_cdfs({folder.name: requests}), out / "latency_cdf.png"))
        written.append(save(batch_size_hist(batches), out / "batch_sizes.png"))
        written.append(save(gantt(batches), out / "gantt.png"))
        return written
    raise InputError(
        "is neither a run folder (summary.json) nor a sweep folder (sweep.json)", source=str(folder)
    )


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
            source="--hue/--load",
        )
    return col


def _default_hue(summary: pd.DataFrame, keys: Sequence[str]) -> str | None:
    """The swept key with the fewest values (the others vary along the line)."""
    varying = [k for k in keys if summary[k].nunique() > 1]
    if len(varying) < 2:
        return None
    return min(varying, key=lambda k: summary[k].nunique())
