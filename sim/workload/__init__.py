"""workload: the traffic a run sends.

open.py draws open-loop arrivals (poisson, gamma, periodic, mmpp, trace); phases.py the
phase rules; robots.py a robot's control loop as a clock-free state machine and its
records; sync_robot.py the lean sync robot whose figures are derived after the run;
rtc.py the real-time chunking robot (a RobotClient with the paper's send rule, a frozen
prefix and its own figures); traffic.py a fleet as closed-loop traffic; build.py a resolved scenario's
random streams and traffic.

May import: errors, io, core (its traffic interfaces and records), config. Imported by
engine, real and the API.
"""

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
