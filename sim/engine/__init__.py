"""The SimPy engine: the clock-free core driven by a simulated clock, the service-time
models it draws batch times from, and the one run pipeline (scenario -> records ->
summary -> files)."""
