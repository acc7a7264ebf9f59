"""Traffic: open-loop arrival processes (known in advance) and, later, closed-loop clients."""

from sim.workload.open import (
    Arrivals,
    gamma_arrivals,
    mmpp_arrivals,
    periodic_arrivals,
    poisson_arrivals,
    trace_arrivals,
)

__all__ = [
    "Arrivals",
    "gamma_arrivals",
    "mmpp_arrivals",
    "periodic_arrivals",
    "poisson_arrivals",
    "trace_arrivals",
]
