"""Sweeps on Dask (local cluster and an external scheduler), resume after a kill,
recommend's capacity search against a hand-computed answer, plots, bad grids."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.experiments.search import Recommender
from tests.conftest import ROOT, run_cli

BIN = Path(sys.executable).parent


def scenario(tmp: Path, **changes) -> Path:
    data = {
        "name": "sweep-test",
        "seed": 11,
        "duration_s": 20,
        "warmup_s": 1,
        "profile": {"path": str(ROOT / "profiles/h100/pi0-cudagraph.csv"), "cameras": 1},
        "workload": {"kind": "poisson", "rate_rps": 120},
        "policy": {"kind": "dynamic", "max_batch": 16, "max_wait_ms": 5},
        "slo": {"latency_ms": 80},
        **changes,
    }
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


GRID = ["--grid", "policy.max_batch=4,16", "--grid", "workload.rate_rps=100,150"]


def test_small_sweep_matches_batchsim_run_point_by_point(tmp_path):
    path = scenario(tmp_path)
    out = tmp_path / "sweep"
    result = run_cli(
        "sweep", str(path), *GRID, "--replications", "2", "--workers", "2", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    rows = pd.read_parquet(out / "results.parquet")
    assert len(rows) == 8 and rows.point.is_unique
    assert sorted(rows.seed.unique()) == [11, 12]
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and (summary.replications == 2).all()
    # every point equals a plain `batchsim run` of the same configuration and seed
    for row in rows.itertuples():
        run_out = tmp_path / f"run-{row.point}"
        r = run_cli(
            "run", str(path), "-q", "--out", str(run_out),
            "--set", f"policy.max_batch={row._5}",
            "--set", f"workload.rate_rps={row._6}",
            "--set", f"seed={row.seed}",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        s = json.loads((run_out / "summary.json").read_text())
        assert row.throughput_rps == s["throughput_rps"]
        assert row.latency_p99_ms == s["latency_ms"]["p99"]
        assert row.slo_attainment == s["slo"]["attainment"]
    # common random numbers: one replication's configs saw the same arrivals
    paired = pd.read_csv(out / "paired_differences.csv")
    assert "latency_p99_ms_diff_ci95" in paired


def test_killed_sweep_resumes_without_losing_or_repeating_points(tmp_path):
    path = scenario(tmp_path, duration_s=150)
    grid = ["--grid", "policy.max_batch=2,4,8,16,32", "--grid", "policy.max_wait_ms=0,5,10"]
    out = tmp_path / "killed"
    cmd = [
        str(BIN / "batchsim"),
        "sweep",
        str(path),
        *grid,
        "--workers",
        "2",
        "--out",
        str(out),
        "-q",
    ]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "points").glob("*.parquet"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Dask workers, mid-sweep
    proc.wait()
    partial = len(list((out / "points").glob("*.parquet")))
    assert 3 <= partial < 15
    resumed = run_cli("sweep", str(path), *grid, "--workers", "2", "--out", str(out), "-q")
    assert resumed.returncode == 0, resumed.stderr
    fresh_out = tmp_path / "fresh"
    fresh = run_cli("sweep", str(path), *grid, "--workers", "2", "--out", str(fresh_out), "-q")
    assert fresh.returncode == 0, fresh.stderr
    a = pd.read_parquet(out / "results.parquet").drop(columns="wall_s")
    b = pd.read_parquet(fresh_out / "results.parquet").drop(columns="wall_s")
    assert a.point.is_unique and len(a) == 15
    pd.testing.assert_frame_equal(a, b)


def test_changed_grid_in_the_same_folder_is_refused(tmp_path):
    path = scenario(tmp_path)
    out = tmp_path / "s"
    assert (
        run_cli(
            "sweep",
            str(path),
            "--grid",
            "policy.max_batch=4",
            "--workers",
            "1",
            "--out",
            str(out),
            "-q",
        ).returncode
        == 0
    )
    again = run_cli(
        "sweep",
        str(path),
        "--grid",
        "policy.max_batch=8",
        "--workers",
        "1",
        "--out",
        str(out),
        "-q",
    )
    assert again.returncode == 2
    assert "different sweep" in again.stderr and "Traceback" not in again.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_runs_on_an_external_dask_scheduler(tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error"}
    scheduler = subprocess.Popen(
        # --no-dashboard alone still serves HTTP on the fixed port 8787: any free one instead
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
         "--dashboard-address", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    worker = subprocess.Popen(
        [str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        path = scenario(tmp_path)
        out = tmp_path / "remote"
        result = run_cli(
            "sweep",
            str(path),
            "--grid",
            "policy.max_batch=4,16",
            "--scheduler",
            address,
            "--out",
            str(out),
            "-q",
        )
        assert result.returncode == 0, result.stderr
        assert len(pd.read_parquet(out / "results.parquet")) == 2
    finally:
        for p in (worker, scheduler):
            p.terminate()
        for p in (worker, scheduler):
            p.wait(timeout=30)


def test_recommend_finds_the_hand_computed_best_max_batch(tmp_path):
    """One periodic source, deterministic s(b) = 10 + 2b ms, dynamic batching without wait,
    p99 <= 60 ms. With max batch K the GPU keeps up to K / s(K) requests/s, and a request
    waits at most one batch then runs one: 2 s(K) <= 60 ms holds for every K <= 8. So the
    best is K = 8, at 8 / 26 ms = 307.7 requests/s (K = 4: 222.2; 2: 142.9; 1: 83.3)."""
    path = tmp_path / "rec.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 1, "duration_s": 30, "warmup_s": 2,
        "profile": {"batch_size": [1, 16], "latency_ms": [12, 42]},
        "workload": {"kind": "periodic", "sources": 1, "rate_hz": 50},
        "policy": {"kind": "dynamic", "max_batch": 1, "max_wait_ms": 0},
    }))  # fmt: skip
    rec = Recommender(
        path, ["p99_ms<=60"], "max-throughput", ["policy.max_batch=1,2,4,8"], 1, "workload.rate_hz"
    )
    ranked = rec.run()
    expected = {8: 8 / 0.026, 4: 4 / 0.018, 2: 2 / 0.014, 1: 1 / 0.012}
    assert ranked[0].config == {"policy.max_batch": 8}
    for cand in ranked:
        capacity = expected[cand.config["policy.max_batch"]]
        assert capacity * 0.97 <= cand.best.load <= capacity
    # the CLI prints the winner and writes the frontier
    result = run_cli(
        "recommend", str(path), "--slo", "p99_ms<=60", "--space", "policy.max_batch=4:8:4",
        "--search", "workload.rate_hz", "--replications", "1", "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "winner {'policy.max_batch': 8}" in result.stdout.replace("\n", " ")
    report = json.loads((tmp_path / "r" / "recommend.json").read_text())
    assert [f["config"]["policy.max_batch"] for f in report["frontier"]] == [8, 4]


def test_recommend_min_replicas(tmp_path):
    # ten requests at once every 100 ms, 10 ms each, one at a time: with R replicas the last
    # waits ceil(10 / R) - 1 services, so p99 <= 31 ms needs ceil(10 / R) <= 3: R = 4
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 1, "duration_s": 10,
        "profile": {"batch_size": [1], "latency_ms": [10]},
        "workload": {"kind": "periodic", "sources": 10, "rate_hz": 10, "phase": "synchronized"},
        "cluster": {"replicas": 1},
        "policy": {"kind": "dynamic", "max_batch": 1, "max_wait_ms": 0},
    }))  # fmt: skip
    ranked = Recommender(path, ["p99_ms<=31"], "min-replicas", [], 1).run()
    assert ranked[0].best.load == 4


def test_plot_writes_figures_for_runs_and_sweeps(tmp_path):
    path = scenario(tmp_path)
    sweep_out, run_out = tmp_path / "sw", tmp_path / "run"
    assert (
        run_cli(
            "sweep", str(path), *GRID, "--workers", "1", "--out", str(sweep_out), "-q"
        ).returncode
        == 0
    )
    assert run_cli("run", str(path), "-q", "--out", str(run_out)).returncode == 0
    frontier = "latency_p99_ms_vs_throughput_rps_by_policy.max_batch.png"
    attainment = "slo_attainment_vs_workload.rate_rps_by_policy.max_batch.png"
    for folder, names in ((sweep_out, {frontier, attainment}),
                          (run_out, {"latency_cdf.png", "batch_sizes.png", "gantt.png"})):  # fmt: skip
        result = run_cli("plot", str(folder))
        assert result.returncode == 0, result.stderr
        written = {p.name for p in (folder / "plots").iterdir()}
        assert written == names
        assert all((folder / "plots" / n).stat().st_size > 10_000 for n in names)
    # any metric against any swept key, in its own file beside the others
    result = run_cli("plot", str(sweep_out), "--x", "workload.rate_rps", "--y", "batch_size_mean")
    assert result.returncode == 0, result.stderr
    assert (
        sweep_out / "plots" / "batch_size_mean_vs_workload.rate_rps_by_policy.max_batch.png"
    ).exists()
    assert len(list((sweep_out / "plots").iterdir())) == 3
    bad = run_cli("plot", str(sweep_out), "--x", "workload.rate_rps", "--y", "nonsense")
    assert bad.returncode == 2 and "'nonsense' is not a metric of this sweep" in bad.stderr


@pytest.mark.parametrize(
    "grid, expected",
    [
        (["--grid", "policy.max_bach=4,8"], ["--grid policy.max_bach", "unknown field"]),
        (["--grid", "policy.max_batch="], ["--grid policy.max_batch=", "at least one value"]),
        (["--grid", "policy.max_batch=4,-1"], ["--grid policy.max_batch", "greater than 0", "-1"]),
        (["--grid", "policy.max_batch=4,128"], ["--grid policy.max_batch", "extrapolated", "128"]),
        (["--grid", "policy.max_batch"], ["--grid", "KEY=V1,V2"]),
    ],
)
def test_bad_grids_exit_2_before_any_work(grid, expected, tmp_path):
    path = scenario(tmp_path)
    out = tmp_path / "never"
    result = run_cli("sweep", str(path), *grid, "--workers", "1", "--out", str(out))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "Traceback" not in line and len(line.splitlines()) == 1
    for fragment in expected:
        assert fragment in line, (fragment, line)
    assert not out.exists()


def test_sweep_section_in_the_scenario(tmp_path):
    path = scenario(tmp_path, sweep={"grid": {"policy.max_wait_ms": [0, 5]}, "replications": 2})
    out = tmp_path / "sec"
    assert run_cli("sweep", str(path), "--workers", "1", "--out", str(out), "-q").returncode == 0
    assert len(pd.read_parquet(out / "results.parquet")) == 4
    assert run_cli("run", str(path), "-q").returncode == 0  # run ignores the section
    shutil.rmtree(out)


@pytest.mark.parametrize(
    "section, expected",
    [
        ({"grid": {"policy.max_batch": [4, 8]}, "replications": 0}, "sweep.replications"),
        ({"grids": {"policy.max_batch": [4, 8]}}, "sweep.grids: unknown field; allowed here: grid"),
        ({"grid": {"policy.max_batch": []}}, "sweep.grid.policy.max_batch"),
    ],
)
def test_the_sweep_section_is_validated_like_every_other(section, expected, tmp_path):
    """Engine II: `replications: 0` no longer silently becomes 1, a typo `grids:` no longer
    becomes an empty grid; run refuses them as sweep does."""
    path = scenario(tmp_path, sweep=section)
    for command in (["sweep", str(path), "--workers", "1", "--out", str(tmp_path / "o")],
                    ["run", str(path), "-q"]):  # fmt: skip
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr


def test_replications_flag_must_be_positive(tmp_path):
    path = scenario(tmp_path)
    result = run_cli("sweep", str(path), *GRID, "--replications", "0", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--replications" in result.stderr


def test_a_damaged_point_file_is_computed_again_with_a_warning(tmp_path):
    path = scenario(tmp_path, duration_s=5)
    out = tmp_path / "sw"
    args = (
        "sweep",
        str(path),
        "--out",
        str(out),
        "--grid",
        "policy.max_batch=4,8",
        "--workers",
        "1",
        "-q",
    )
    assert run_cli(*args).returncode == 0
    before = pd.read_parquet(out / "results.parquet").drop(columns="wall_s")
    damaged = sorted((out / "points").glob("*.parquet"))[1]
    damaged.write_bytes(b"half a parquet file")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert (
        f"{damaged} is damaged" in result.stderr and "computing that point again" in result.stderr
    )
    after = pd.read_parquet(out / "results.parquet").drop(columns="wall_s")
    pd.testing.assert_frame_equal(before, after)  # the same point, the same seed, the same figures


def test_ctrl_c_on_a_sweep_is_one_line_and_resumable(tmp_path):
    """Ctrl-C reaches the whole process group (the Dask workers too): the sweep exits 130
    with one line saying what is saved, no worker prints a traceback, and the same
    command finishes the rest."""
    from tests.conftest import BATCHSIM

    out = tmp_path / "sw"
    argv = [*BATCHSIM, "sweep", str(ROOT / "scenarios" / "aloha-pi0-fleet.yaml"), "--out",
            str(out), "--grid", "policy.max_batch=1,2,4,8", "--replications", "10",
            "--set", "duration_s=600", "--workers", "2", "--quiet"]  # fmt: skip
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,  # its own group, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list((out / "points").glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("batchsim: interrupted: "), err
    saved = len(list((out / "points").glob("*.parquet")))
    assert f"{saved} of 40 points are saved" in lines[0]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert len(list((out / "points").glob("*.parquet"))) == 40


def test_intervals_never_cross_a_log_axis_floor():
    import pandas as pd

    from sim.plots.figures import _error_bars

    # a sweep folder from before _lo/_hi: the t half-width, its lower bar above zero
    old = pd.DataFrame({"m": [1.0, 100.0, 1000.0], "m_ci95": [5.0, 1.0, float("nan")]})
    lower, upper = _error_bars(old, "m", log=True)
    assert (old.m - lower > 0).all() and list(upper) == [5.0, 1.0, 0.0]
    assert list(_error_bars(old, "m", log=False)[0]) == [5.0, 1.0, 0.0]
    # today's: the skew-aware interval, never below zero by construction
    new = old.assign(m_lo=[0.5, 90.0, float("nan")], m_hi=[3.0, 120.0, float("nan")])
    lower, upper = _error_bars(new, "m", log=True)
    assert list(lower) == [0.5, 10.0, 0.0] and list(upper) == [2.0, 20.0, 0.0]


def test_a_sweep_reports_the_interval_recommend_decides_by(tmp_path):
    """summary.csv's _lo/_hi are sim.experiments.stats.interval of the replications (a
    p99 on the log scale, attainment cut to [0, 1]); the table prints them."""
    from sim.experiments.stats import interval

    out = tmp_path / "sw"
    done = run_cli("sweep", str(scenario(tmp_path)), "--grid", "workload.rate_rps=100,170",
                   "--replications", "3", "--workers", "1", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = pd.read_parquet(out / "results.parquet")
    summary = pd.read_csv(out / "summary.csv")
    for config, group in rows.groupby("config"):
        row = summary[summary.config == config].iloc[0]
        p99 = interval(group.latency_p99_ms.tolist(), "ms")
        assert row.latency_p99_ms_lo == pytest.approx(p99.lo)
        assert row.latency_p99_ms_hi == pytest.approx(p99.hi)
        assert 0 <= row.slo_attainment_lo <= row.slo_attainment_hi <= 1
    assert f"{summary.latency_p99_ms.iloc[0]:.1f} [" in done.stdout


def test_no_text_of_any_figure_is_clipped(tmp_path, monkeypatch):
    """Every figure `batchsim plot` draws for a run folder (open loop and a fleet) and a
    sweep folder: each visible text (titles, labels, ticks, legends, colour bars) lies
    inside the figure once it is fitted, as `save` writes it."""
    from sim import plots
    from sim.api import plot as plot_folder
    from sim.plots import figures

    checked: list[str] = []
    real_fit = figures.fit_text

    def fit_and_check(fig) -> None:
        real_fit(fig)
        fig.canvas.draw()  # what is drawn: ticks outside the axes' view are not
        renderer = fig.canvas.get_renderer()
        drawn = fig.get_tightbbox(renderer)  # inches: every drawn artist, text included
        width, height = fig.get_size_inches()
        tol = 1 / fig.dpi  # a pixel
        inside = (drawn.x0 >= -tol and drawn.y0 >= -tol and drawn.x1 <= width + tol
                  and drawn.y1 <= height + tol)  # fmt: skip
        title = fig.axes[0].get_title() if fig.axes else ""
        assert inside, f"clipped: {title!r}: drawn {drawn} in {width:.2f}x{height:.2f} in"
        checked.append(title)

    monkeypatch.setattr(figures, "fit_text", fit_and_check)
    assert plots  # the package, imported for its figures
    path = scenario(tmp_path)
    sweep_out, run_out, fleet_out = tmp_path / "sw", tmp_path / "run", tmp_path / "fleet"
    assert run_cli("sweep", str(path), *GRID, "--workers", "1", "--out", str(sweep_out),
                   "-q").returncode == 0  # fmt: skip
    assert run_cli("run", str(path), "-q", "--out", str(run_out)).returncode == 0
    fleet = str(ROOT / "scenarios" / "aloha-pi0-fleet.yaml")
    assert run_cli("run", fleet, "-q", "--set", "duration_s=20", "--out",
                   str(fleet_out)).returncode == 0  # fmt: skip
    for folder in (sweep_out, run_out, fleet_out):
        plot_folder(folder)
    assert len(checked) >= 9  # 2 sweep figures, 3 run figures, 4 fleet figures
    # validate --records' CDF (two simulations, a long legend) and an estimated profile

    from sim.api import plot_profile
    from sim.validation.records import validate_records

    shipped = ROOT / "recorded" / "serve-observe-cpu"
    validate_records(ROOT / "scenarios" / "serve-observe-cpu.yaml",
                     sorted(shipped.glob("observed-*")), tmp_path / "val", sim_draws=2)  # fmt: skip
    estimated = ROOT / "profiles" / "estimated" / "l40s-pi0-cudagraph"
    for suffix in (".csv", ".meta.json"):
        shutil.copy(estimated.with_name(estimated.name + suffix), tmp_path)
    plot_profile(tmp_path / "l40s-pi0-cudagraph.csv")
    assert len(checked) >= 11
    assert any(t.startswith("latency CDF: 3 recorded run(s)") for t in checked)


def test_frontier_points_are_labelled_and_joined_in_the_order_of_the_swept_key():
    """Throughput need not grow with the swept key (here it dips at 150): the line follows
    the key, not the x axis, and each point names its value."""
    from sim.plots.figures import frontier

    summary = pd.DataFrame(
        {
            "grid.workload.rate_rps": [150.0, 100.0, 180.0],
            "throughput_rps": [90.0, 99.0, 120.0],
            "latency_p99_ms": [50.0, 40.0, 70.0],
        }
    )
    fig = frontier(summary, along="grid.workload.rate_rps")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["100", "150", "180"]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [99.0, 90.0, 120.0]  # in the key's order, not sorted by x
    assert "joined by workload.rate_rps" in ax.get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_run_figures_leave_out_the_warm_up_as_the_table_does(tmp_path):
    """A run folder's latency CDF and batch sizes are over the table's window: the run's
    own summary counts what they draw."""
    from sim.api import plot as plot_folder
    from sim.plots import figures

    out = tmp_path / "run"
    path = scenario(tmp_path, warmup_s=5)
    assert run_cli("run", str(path), "-q", "--out", str(out)).returncode == 0
    drawn = {}
    real_cdfs, real_hist = figures.latency_cdfs, figures.batch_size_hist

    def cdfs(runs, warmup_s=0.0):
        drawn["warmup_s"] = warmup_s
        return real_cdfs(runs, warmup_s)

    def hist(batches):
        drawn["batches"] = len(batches)
        return real_hist(batches)

    import sim.plots.folders as folders

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(folders, "latency_cdfs", cdfs)
        mp.setattr(folders, "batch_size_hist", hist)
        plot_folder(out)
    summary = json.loads((out / "summary.json").read_text())
    assert drawn == {"warmup_s": 5.0, "batches": summary["batch_size"]["batches"]}
    requests = pd.read_parquet(out / "requests.parquet")
    fig = figures.latency_cdfs({"run": requests}, 5.0)
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == summary["requests"]["completed"]


def test_the_batch_size_histogram_has_a_numeric_axis_and_no_lone_legend():
    """Sizes 1, 3 and 6 stand as far apart as they are; one kind of bar needs no legend,
    and padded sizes that differ get their own bars and a legend."""
    import matplotlib.pyplot as plt

    from sim.plots.figures import batch_size_hist

    plain = pd.DataFrame({"size": [1, 3, 3, 6], "padded_size": [1, 3, 3, 6]})
    fig = batch_size_hist(plain)
    ax = fig.axes[0]
    centres = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
    assert centres == [1.0, 3.0, 6.0] and ax.get_legend() is None
    plt.close(fig)
    padded = pd.DataFrame({"size": [1, 3, 6], "padded_size": [8, 8, 8]})
    fig = batch_size_hist(padded)
    assert len(fig.axes[0].patches) == 4 and fig.axes[0].get_legend() is not None
    plt.close(fig)
