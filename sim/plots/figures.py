"""Seaborn figures of runs, sweeps and profiles; each function returns the matplotlib Figure
it drew (`save` writes one whole)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

# matplotlib's note that its config folder cannot be written (it then uses a temporary
# one) is not the user's error: it would print several lines before batchsim's one
_matplotlib_log = logging.getLogger("matplotlib")
_level = _matplotlib_log.level
_matplotlib_log.setLevel(logging.ERROR)
try:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # files, never a window
    import matplotlib.pyplot as plt
    import seaborn as sns
finally:
    _matplotlib_log.setLevel(_level)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sim.errors import InputError  # noqa: E402
from sim.io.outputs import replacing  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _axis_label(name: str) -> str:
    """A metric's axis label from the registry (its label and unit), else the name."""
    from sim.metrics.registry import METRICS

    metric = METRICS.get(name.removeprefix("grid."))
    if metric is None:
        return name.removeprefix("grid.")
    return f"{metric.label} ({metric.unit})"


def _error_bars(values: pd.Series, ci: pd.Series | None, log: bool) -> np.ndarray | None:
    """Asymmetric error bars; on a log axis the lower bar stops above zero (an interval
    reaching below 0 would be drawn down to -infinity)."""
    if ci is None:
        return None
    half = ci.fillna(0).to_numpy(dtype=float)
    y = values.to_numpy(dtype=float)
    lower = np.minimum(half, 0.9 * y) if log else half
    return np.vstack([lower, half])


def metric_plot(
    summary: pd.DataFrame,
    x: str,
    y: str,
    hue: str | None = None,
    subtitle: str = "",
    x_is_metric: bool = False,
):
    """One metric against a swept key (or another metric), mean and 95% CI over
    replications, one line per `hue` value. A log axis is used when the values span more
    than 30x; the intervals never cross its floor."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = [(None, summary)] if hue is None else list(summary.groupby(hue, sort=True))
    palette = sns.color_palette("colorblind", max(len(groups), 1))
    values = summary[y].dropna()
    log = bool(len(values) and values.min() > 0 and values.max() / values.min() > 30)
    for color, (label, group) in zip(palette, groups, strict=False):
        group = group.sort_values(x)
        yerr = _error_bars(group[y], group.get(f"{y}_ci95"), log)
        xerr = _error_bars(group[x], group.get(f"{x}_ci95"), False) if x_is_metric else None
        ax.errorbar(group[x], group[y], xerr=xerr, yerr=yerr, fmt="o-", color=color, capsize=3,
                    label=None if label is None else f"{hue.removeprefix('grid.')}={label}")  # fmt: skip
        if yerr is not None:
            ax.fill_between(
                group[x], group[y] - yerr[0], group[y] + yerr[1], color=color, alpha=0.15
            )
    if log:
        ax.set_yscale("log")  # overloaded points would flatten the rest
    if pd.api.types.is_integer_dtype(summary[x]):  # replicas, robots: whole ticks
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel(_axis_label(x))
    ax.set_ylabel(_axis_label(y))
    titles(ax, f"{_axis_label(y)} vs {_axis_label(x)} (mean, 95% CI over replications)", subtitle)
    if hue is not None:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def frontier(
    summary: pd.DataFrame,
    hue: str | None = None,
    x: str = "throughput_rps",
    y: str = "latency_p99_ms",
    subtitle: str = "",
):
    """Latency vs throughput per configuration, with 95% CI bars; one line per `hue` value."""
    return metric_plot(summary, x, y, hue, subtitle, x_is_metric=True)


def titles(ax, title: str, subtitle: str) -> None:
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize="medium")


def describe_setup(
    scenario: str, provenance: dict, slo_ms: float | None, extra: str = "", source: str = ""
) -> str:
    """A figure's subtitle: the scenario, the profile (GPU, dtype, measured or ESTIMATED;
    or where it came from) and the SLO."""
    estimate = provenance.get("estimate")
    gpu = provenance.get("gpu") or provenance.get("device")
    if estimate:
        target, measured = estimate["target_gpu"]["name"], estimate["source_gpu"]["name"]
        source = f"ESTIMATED for {target} from {measured}"
    elif gpu:
        source = f"measured on {gpu}"
    else:
        source = "inline" if source in ("", "<inline>") else Path(source).name
    dtype = str(provenance.get("dtype", "")).removeprefix("torch.")
    parts = [scenario, f"profile {source}" + (f", {dtype}" if dtype else "")]
    if slo_ms is not None:
        parts.append(f"SLO {slo_ms:g} ms")
    if extra:
        parts.append(extra)
    return " | ".join(parts)


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
    lines = {}
    for label, requests in runs.items():
        done = requests[requests.outcome == "completed"]
        lines[label] = (done.completion - done.arrival).to_numpy() * 1000
    return _cdfs(lines, "latency (ms)", "fraction of requests")


def round_trip_cdfs(trips: pd.DataFrame):
    """Empirical CDFs of the robots' round trips (ms, send to answer at the robot), one
    line per robot group."""
    lines = {
        f"{group} ({frame.robot.nunique()} robots)": frame.round_trip_ms.to_numpy()
        for group, frame in trips.groupby("group", observed=True)
    }
    return _cdfs(lines, "robot round trip (ms): send to answer, network included",
                 "fraction of round trips")  # fmt: skip


def _cdfs(lines: dict[str, np.ndarray], xlabel: str, ylabel: str):
    """One empirical CDF per labelled sample (an empty one draws nothing)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, values in lines.items():
        values = np.sort(values)
        if values.size:
            ax.plot(values, np.arange(1, values.size + 1) / values.size, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def batch_size_hist(batches: pd.DataFrame):
    """How often each batch size ran, on a numeric axis (sizes 1, 3, 6 are drawn apart as
    far as they are, not side by side); the padded sizes beside them where they differ."""
    fig, ax = plt.subplots(figsize=(7, 4))
    real = batches["size"].value_counts().sort_index()
    padded_differs = not (batches["size"] == batches["padded_size"]).all()
    width = 0.4 if padded_differs else 0.8
    shift = width / 2 if padded_differs else 0.0
    ax.bar(real.index.to_numpy() - shift, real.to_numpy(), width=width, label="requests in batch")
    if padded_differs:  # a legend only where there are two kinds to tell apart
        padded = batches["padded_size"].value_counts().sort_index()
        ax.bar(padded.index.to_numpy() + shift, padded.to_numpy(), width=width,
               label="padded size")  # fmt: skip
        ax.legend()
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("batch size")
    ax.set_ylabel("batches")
    fig.tight_layout()
    return fig


def gantt(batches: pd.DataFrame, start_s: float | None = None, span_s: float = 1.0):
    """Per-replica timeline of batches in [start, start + span): who ran what, when."""
    if start_s is None:
        start_s = float(batches.start.median()) if len(batches) else 0.0
    window = batches[(batches.end > start_s) & (batches.start < start_s + span_s)]
    replicas = sorted(batches.replica.unique()) if len(batches) else [0]
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.55 * len(replicas)))
    cmap = plt.get_cmap("viridis")
    top = max(int(batches["size"].max()), 1) if len(batches) else 1
    norm = matplotlib.colors.Normalize(vmin=1, vmax=max(top, 2))
    for row in window.itertuples():
        color = cmap(norm(row.size))
        ax.barh(row.replica, (row.end - row.start) * 1000, left=(row.start - start_s) * 1000,
                color=color, edgecolor="white", height=0.6)  # fmt: skip
        if (row.end - row.start) / span_s > 0.015:  # a count where it fits, dark on light
            light = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 0.5
            ax.text((row.start - start_s + (row.end - row.start) / 2) * 1000, row.replica,
                    str(row.size), ha="center", va="center", fontsize=7,
                    color="black" if light else "white")  # fmt: skip
    ax.set_yticks(replicas, [f"replica {r}" for r in replicas])
    ax.set_xlim(0, span_s * 1000)
    ax.set_xlabel(f"time (ms) from t = {start_s:.3f} s; numbers: requests in the batch")
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01,
                       label="requests in the batch")  # fmt: skip
    bar.locator = matplotlib.ticker.MaxNLocator(integer=True)  # batch sizes are whole
    bar.update_ticks()
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


def fit_text(fig) -> None:
    """Every title inside the figure: a title wider than the figure is wrapped at word
    boundaries until it fits, then the layout is made tight (titles were clipped on the
    right of every 800-pixel figure)."""
    import textwrap

    renderer = fig.canvas.get_renderer()
    room = fig.bbox.width * 0.96
    titles = [ax.title for ax in fig.axes]
    if getattr(fig, "_suptitle", None) is not None:
        titles.append(fig._suptitle)
    for text in titles:
        if not text.get_text():
            continue
        paragraphs = text.get_text().split("\n")  # the title's own lines stay lines
        chars = max(len(line) for line in paragraphs)
        while text.get_window_extent(renderer).width > room and chars > 20:
            chars = int(chars * 0.85)
            text.set_text("\n".join(textwrap.fill(line, chars) for line in paragraphs))
    with warnings.catch_warnings():  # a layout that cannot be tightened further is kept
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()


def save(fig, path: Path) -> Path:
    """Write a figure whole (or leave the old one) and close it, every text inside it."""
    try:
        fit_text(fig)
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path
