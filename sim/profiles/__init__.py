"""profiles: a model's measured cost per batch size, as data with provenance.

Owns the Profile value and its service-time sampler (profile.py), staged models
(staged.py), reading and writing profile CSVs with their sidecars in one place
(store.py), the profiler that measures a torch model (profiler.py, torch only) and
estimate/, which moves a measured profile to a GPU that was not measured.

May import: errors, io, models. Imported by policies and everything above them.
"""
