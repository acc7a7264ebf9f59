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


def _error_bars(group: pd.DataFrame, name: str, log: bool) -> np.ndarray | None:
    """Error bars of a metric's 95% interval over replications: the sweep's `_lo`/`_hi`
    (skew-aware, never below zero), else (a sweep folder from before them) the t
    half-width, whose lower bar stops above zero on a log axis (an interval reaching below
    0 would be drawn down to -infinity)."""
    y = group[name].to_numpy(dtype=float)
    if f"{name}_lo" in group and f"{name}_hi" in group:
        lo = group[f"{name}_lo"].to_numpy(dtype=float)
        hi = group[f"{name}_hi"].to_numpy(dtype=float)
        return np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)]).clip(min=0)
    ci = group.get(f"{name}_ci95")
    if ci is None:
        return None
    half = ci.fillna(0).to_numpy(dtype=float)
    lower = np.minimum(half, 0.9 * y) if log else half
    return np.vstack([lower, half])


def metric_plot(
    summary: pd.DataFrame,
    x: str,
    y: str,
    hue: str | None = None,
    subtitle: str = "",
    x_is_metric: bool = False,
    along: str | None = None,
):
    """One metric against a swept key (or another metric), mean and 95% CI over
    replications, one line per `hue` value. A log axis is used when the values span more
    than 30x; the intervals never cross its floor. Against a metric, each line joins its
    points in the order of the swept key `along`, each labelled with its value."""
    fig, ax = plt.subplots(figsize=_size(hue))
    groups = [(None, summary)] if hue is None else list(summary.groupby(hue, sort=True))
    palette = sns.color_palette("colorblind", max(len(groups), 1))
    values = summary[y].dropna()
    log = bool(len(values) and values.min() > 0 and values.max() / values.min() > 30)
    labels: list[tuple] = []
    for color, (label, group) in zip(palette, groups, strict=False):
        group = group.sort_values(along if along is not None else x)
        yerr = _error_bars(group, y, log)
        xerr = _error_bars(group, x, False) if x_is_metric else None
        ax.errorbar(group[x], group[y], xerr=xerr, yerr=yerr, fmt="o-", color=color, capsize=3,
                    label=None if label is None else f"{hue.removeprefix('grid.')}={label}")  # fmt: skip
        if yerr is not None and along is None:  # a band only along a monotone x
            ax.fill_between(
                group[x], group[y] - yerr[0], group[y] + yerr[1], color=color, alpha=0.15
            )
        if along is not None:  # which configuration each point is
            labels += [(px, py, _short(v), color)
                       for px, py, v in zip(group[x], group[y], group[along], strict=True)]  # fmt: skip
    if log:
        ax.set_yscale("log")  # overloaded points would flatten the rest
    _label_points(ax, labels)
    if pd.api.types.is_integer_dtype(summary[x]):  # replicas, robots: whole ticks
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel(_axis_label(x))
    ax.set_ylabel(_axis_label(y))
    what = f"{_axis_label(y)} vs {_axis_label(x)} (mean, 95% interval over replications)"
    if along is not None:
        what += f"; points labelled and joined by {along.removeprefix('grid.')}"
    titles(ax, what, subtitle)
    if hue is not None:
        _legend_outside(ax)
    fig.tight_layout()
    return fig


def frontier(
    summary: pd.DataFrame,
    hue: str | None = None,
    x: str = "throughput_rps",
    y: str = "latency_p99_ms",
    subtitle: str = "",
    along: str | None = None,
):
    """Latency vs throughput per configuration, with 95% CI bars; one line per `hue` value,
    its points joined in the order of the swept key `along` and labelled with its value."""
    return metric_plot(summary, x, y, hue, subtitle, x_is_metric=True, along=along)


def _size(hue: str | None) -> tuple[float, float]:
    """A figure's size in inches: wider with a legend beside the axes."""
    return (9.0, 4.8) if hue is not None else (7.0, 4.5)


def _legend_outside(ax) -> None:
    """The legend right of the axes, where it hides no line (inside, "best" still sat on
    a falling attainment line)."""
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def _label_points(ax, labels: list[tuple], room_px: float = 11.0) -> None:
    """Each point's label beside it, unless it would sit on one already placed (saturated
    points crowd together; identical configurations coincide): those are left unlabelled."""
    ax.autoscale_view()
    placed: list[np.ndarray] = []
    for px, py, text, color in labels:
        at = ax.transData.transform((px, py))
        if not np.all(np.isfinite(at)) or any(np.hypot(*(at - p)) < room_px for p in placed):
            continue
        placed.append(at)
        ax.annotate(text, (px, py), textcoords="offset points", xytext=(5, 4), fontsize=7,
                    color=color)  # fmt: skip


def _short(value) -> str:
    """A swept value as a point's label: 150 not 150.0, a long label cut."""
    if isinstance(value, float) and value == int(value):
        value = int(value)
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


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
    fig, ax = plt.subplots(figsize=_size(hue))
    groups = [(None, summary)] if hue is None else list(summary.groupby(hue, sort=True))
    for (label, group), color in zip(
        groups, sns.color_palette("colorblind", len(groups)), strict=False
    ):
        group = group.sort_values(load)
        ax.errorbar(group[load], group["slo_attainment"],
                    yerr=_error_bars(group, "slo_attainment", False),
                    fmt="o-", capsize=3, color=color,
                    label=None if label is None else f"{hue.removeprefix('grid.')}={label}")  # fmt: skip
    ax.set_xlabel(load.removeprefix("grid."))
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(-0.02, 1.02)
    if hue is not None:
        _legend_outside(ax)
    fig.tight_layout()
    return fig


def latency_cdfs(runs: dict[str, pd.DataFrame], warmup_s: float = 0.0):
    """Empirical CDFs of request latency (ms), one line per labelled requests table, over
    the completed requests that arrived after `warmup_s` (the table's window)."""
    lines = {}
    for label, requests in runs.items():
        done = requests[(requests.outcome == "completed") & (requests.arrival >= warmup_s)]
        lines[label] = (done.completion - done.arrival).to_numpy() * 1000
    return latency_cdf_of(lines)


def latency_cdf_of(samples: dict[str, np.ndarray]):
    """Empirical CDFs of labelled latency samples (ms)."""
    return _cdfs(samples, "latency (ms)", "fraction of requests")


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
        if values.size:  # predictions dashed, measurements solid
            style = "--" if label.startswith("simulated") else "-"
            ax.plot(values, np.arange(1, values.size + 1) / values.size, style, label=label)
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
    # tall enough for a colour bar with readable ticks, also with one replica
    fig, ax = plt.subplots(figsize=(10, max(2.8, 1.6 + 0.55 * len(replicas))))
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
    # at most five whole ticks: batch sizes are whole, and 1..64 in full was unreadable
    bar.locator = matplotlib.ticker.MaxNLocator(nbins=5, integer=True)
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
    """Every title inside the figure: the layout is made tight, and a title that still
    reaches past either edge (a title is centred over its axes, not the figure) is wrapped
    at word boundaries, a little narrower each round, until it fits (titles were clipped on
    the right of every 800-pixel figure)."""
    import textwrap

    titles = [ax.title for ax in fig.axes]
    if getattr(fig, "_suptitle", None) is not None:
        titles.append(fig._suptitle)
    titles = [t for t in titles if t.get_text()]
    width = {id(t): max(len(line) for line in t.get_text().split("\n")) for t in titles}
    original = {id(t): t.get_text().split("\n") for t in titles}  # its own lines stay lines
    for _ in range(12):
        with warnings.catch_warnings():  # a layout that cannot be tightened further is kept
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()
        renderer = fig.canvas.get_renderer()
        right = fig.bbox.width
        over = [
            t for t in titles
            if (box := t.get_window_extent(renderer)).x0 < 0 or box.x1 > right
        ]  # fmt: skip
        if not over:
            return
        for t in over:
            width[id(t)] = max(int(width[id(t)] * 0.85), 20)
            t.set_text("\n".join(textwrap.fill(line, width[id(t)]) for line in original[id(t)]))


def save(fig, path: Path) -> Path:
    """Write a figure whole (or leave the old one) and close it, every text inside it."""
    try:
        fit_text(fig)
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path
