"""core: the clock-free batching server, driven by any clock.

Owns ServerCore (server.py: admission, the policy's request-level decisions, the wake-ups
of idle replicas (cohorts of a shared queue, per-replica wakes), records; the Start and
Sleep it answers are actions.py),
step-level iterations (step_level.py), the batch log (batch_log.py), the checks on what a
policy returns (guard.py), queues and admission (queue.py), per-replica dispatchers
(dispatch.py), the per-request columns (columns.py), the traffic interfaces it is built
from (traffic.py: OpenTraffic, ClosedLoopTraffic), the steps rule (steps.py), the run's
records (records.py) and the named invariants a run's records keep (invariants.py).

May import: errors, policies, profiles. Imported by config, workload, metrics, engine,
real and the CLI. Nothing here has a clock, sleeps, or touches SimPy or threads.
"""
