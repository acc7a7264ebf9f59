"""metrics: records -> figures, read through one registry.

registry.py names every figure summary.json holds (its path, unit, label and `--slo`
name); summary.py computes a run's figures from its records; robots.py a fleet's
per-robot figures and round trips. The records are read, never changed.

May import: core (records). Imported by engine, plots, experiments, validation, api, cli.
"""
