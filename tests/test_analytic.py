"""The engine against exact queueing results, within statistical tolerance.

Every run uses a fixed seed, so each assertion is deterministic; the tolerances
are a few standard errors of the estimates at these run lengths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sim.metrics.summary import summarize
from sim.policies import DynamicPolicy
from sim.profiles.profile import Profile
from sim.workload import poisson_arrivals
from tests.conftest import simulate_arrays


def mean_latency_s(records) -> float:
    done = records.request_batch >= 0
    return float(np.mean(records.request_completion_s[done] - records.arrival_s[done]))


def mean_queue_delay_s(records) -> float:
    done = records.request_batch >= 0
    return float(np.mean(records.request_start_s[done] - records.arrival_s[done]))


def exponential_profile(mean_ms: float, samples: int = 200_000, seed: int = 7) -> Profile:
    rng = np.random.default_rng(seed)
    return Profile.from_samples({1: rng.exponential(mean_ms, samples)})


def one_at_a_time() -> DynamicPolicy:
    return DynamicPolicy(max_batch=1, max_wait_ms=0.0)


def test_md1_matches_pollaczek_khinchine():
    service_s, rho = 0.010, 0.7
    lam = rho / service_s
    arrivals = poisson_arrivals(np.random.default_rng(1), lam, count=400_000)
    rec = simulate_arrays(arrivals.time_s, one_at_a_time(), Profile.from_samples({1: 10.0}))
    wq_exact = rho * service_s / (2 * (1 - rho))
    assert mean_queue_delay_s(rec) == pytest.approx(wq_exact, rel=0.03)
    assert mean_latency_s(rec) == pytest.approx(wq_exact + service_s, rel=0.02)


def test_mm1_mean_sojourn_and_distribution():
    mean_ms, rho = 10.0, 0.6
    profile = exponential_profile(mean_ms)
    lam = rho / (mean_ms / 1000)
    arrivals = poisson_arrivals(np.random.default_rng(2), lam, count=400_000)
    rec = simulate_arrays(arrivals.time_s, one_at_a_time(), profile, seed=3)
    # P-K with the profile's own moments is exact for its (empirical) service law
    es = profile.mean_ms(1) / 1000
    es2 = profile.second_moment_ms2(1) / 1e6
    wq_pk = lam * es2 / (2 * (1 - lam * es))
    assert mean_queue_delay_s(rec) == pytest.approx(wq_pk, rel=0.04)
    # and the textbook M/M/1: sojourn ~ Exp(mu - lambda)
    mu = 1 / (mean_ms / 1000)
    assert mean_latency_s(rec) == pytest.approx(1 / (mu - lam), rel=0.04)
    done = rec.request_batch >= 0
    sojourn = rec.request_completion_s[done] - rec.arrival_s[done]
    for q in (0.5, 0.9, 0.99):
        assert np.quantile(sojourn, q) == pytest.approx(-math.log(1 - q) / (mu - lam), rel=0.05)


def erlang_c(c: int, offered: float) -> float:
    """Probability of waiting in M/M/c with offered load a = lambda/mu."""
    rho = offered / c
    tail = offered**c / math.factorial(c) / (1 - rho)
    head = sum(offered**k / math.factorial(k) for k in range(c))
    return tail / (head + tail)


def test_mmc_matches_erlang_c():
    c, mean_ms, rho = 3, 10.0, 0.8
    mu = 1000 / mean_ms
    lam = rho * c * mu
    profile = exponential_profile(mean_ms)
    arrivals = poisson_arrivals(np.random.default_rng(4), lam, count=500_000)
    rec = simulate_arrays(arrivals.time_s, one_at_a_time(), profile, replicas=c, seed=5)
    p_wait = erlang_c(c, lam / mu)
    wq = p_wait / (c * mu - lam)
    assert mean_queue_delay_s(rec) == pytest.approx(wq, rel=0.05)
    done = rec.request_batch >= 0
    waited = rec.request_start_s[done] - rec.arrival_s[done]
    assert float(np.mean(waited > 0)) == pytest.approx(p_wait, abs=0.01)
    summary = summarize(rec)
    assert summary["utilization"]["mean"] == pytest.approx(rho, abs=0.01)
    assert len(summary["utilization"]["per_replica"]) == c


def bulk_service_exact(lam: float, service_s: dict[int, float], max_batch: int, states: int = 400):
    """Exact figures of the M/D^(k)/1 bulk-service queue with the control limit 1.

    Embedded Markov chain at batch completions: q requests wait. If q >= 1 the
    server takes k = min(q, K) at once, else it idles until the next arrival and
    serves it alone (k = 1). Arrivals during the service are Poisson(lam s(k)), so
    q' = q - k + A (q' = A after an idle spell). Time averages follow from a
    renewal-reward argument over the inter-completion cycles.
    """
    n = states
    P = np.zeros((n, n))
    k_of = np.array([min(max(q, 1), max_batch) for q in range(n)])
    left = np.array([q - k_of[q] if q >= 1 else 0 for q in range(n)])
    for q in range(n):
        dist = stats.poisson(lam * service_s[k_of[q]])
        pmf = dist.pmf(np.arange(n - left[q]))
        P[q, left[q] :] = pmf
        P[q, -1] += 1 - pmf.sum()
    w, v = np.linalg.eig(P.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    pi = pi / pi.sum()
    s = np.array([service_s[k] for k in k_of])
    idle = np.array([1 / lam if q == 0 else 0.0 for q in range(n)])
    wait_area = left * s + lam * s**2 / 2  # requests waiting, integrated over the service
    cycle = s + idle
    lq = pi @ wait_area / (pi @ cycle)
    mean_k = pi @ k_of
    per_request_service = pi @ (k_of * s) / mean_k
    size_dist = {k: float(pi[k_of == k].sum()) for k in range(1, max_batch + 1)}
    return {
        "mean_batch": float(mean_k),
        "queue_delay_s": float(lq / lam),
        "latency_s": float(lq / lam + per_request_service),
        "batch_size_dist": size_dist,
        "utilization": float(pi @ s / (pi @ cycle)),
    }


@pytest.mark.parametrize("lam", [150.0, 300.0])
def test_bulk_service_queue_matches_embedded_markov_chain(lam):
    max_batch = 16
    service_ms = {k: 10.0 + 2.0 * k for k in range(1, max_batch + 1)}
    profile = Profile.from_samples(service_ms)
    exact = bulk_service_exact(lam, {k: v / 1000 for k, v in service_ms.items()}, max_batch)
    arrivals = poisson_arrivals(np.random.default_rng(11), lam, count=400_000)
    rec = simulate_arrays(arrivals.time_s, DynamicPolicy(max_batch, 0.0), profile)
    assert float(rec.batch_size.mean()) == pytest.approx(exact["mean_batch"], rel=0.01)
    assert mean_queue_delay_s(rec) == pytest.approx(exact["queue_delay_s"], rel=0.02)
    assert mean_latency_s(rec) == pytest.approx(exact["latency_s"], rel=0.01)
    observed = np.bincount(rec.batch_size, minlength=max_batch + 1)[1:] / rec.batch_size.size
    expected = np.array([exact["batch_size_dist"][k] for k in range(1, max_batch + 1)])
    assert np.max(np.abs(observed - expected)) < 0.01
    summary = summarize(rec)
    assert summary["utilization"]["mean"] == pytest.approx(exact["utilization"], abs=0.005)
