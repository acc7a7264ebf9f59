"""Does a model run slower after the server has been idle? Forward times after idle gaps.

A serving loop sleeps between batches (a timer, a deadline, no traffic); back-to-back
profiling calls never do. This times the model's forward after idle gaps of several
lengths, in shuffled order on fresh inputs, and prints median, mean and p90 per gap
against back-to-back calls. The simulator draws service times independently of what
came before, so a ratio well above 1 is error it cannot see.
Usage: python benchmarks/bench_idle.py [--model pi0] [--size tiny] [--batch 8] [--reps 25]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim import models  # noqa: E402
from sim.profiles.profiler import ProfileOptions, Profiler  # noqa: E402

GAPS_MS = (0, 5, 50, 300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pi0")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=25)
    args = parser.parse_args()
    bundle = models.build(args.model, args.size)
    profiler = Profiler(bundle, ProfileOptions(threads=1))
    for _ in range(3):
        profiler.call(**profiler.inputs(args.batch, 1, None))
    order = np.random.default_rng(0).permutation(np.repeat(GAPS_MS, args.reps))
    times: dict[int, list[float]] = {g: [] for g in GAPS_MS}
    for gap in order.tolist():
        inputs = profiler.inputs(args.batch, 1, None)
        time.sleep(gap / 1000)
        times[gap].append(profiler.time_call(lambda inputs=inputs: profiler.call(**inputs)))
    base = {f: f(np.asarray(times[0])) for f in (np.median, np.mean)}
    print(f"{args.model}-{args.size}, batch {args.batch}, {args.reps} calls per gap, 1 thread")
    print(
        f"{'idle before (ms)':>17s} {'median ms':>10s} {'mean ms':>9s} {'p90 ms':>8s}  ratios to back-to-back"
    )
    for gap in GAPS_MS:
        t = np.asarray(times[gap])
        med, mean, p90 = np.median(t), t.mean(), np.percentile(t, 90)
        p90_0 = np.percentile(times[0], 90)
        print(
            f"{gap:>17d} {med:>10.2f} {mean:>9.2f} {p90:>8.2f}  "
            f"median x{med / base[np.median]:.2f}, mean x{mean / base[np.mean]:.2f}, p90 x{p90 / p90_0:.2f}"
        )


if __name__ == "__main__":
    main()
