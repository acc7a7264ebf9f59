"""validation: the simulator's prediction checked against real runs.

live.py validates against live runs of the model (set up, measure, predict, compare);
records.py against recorded runs (`validate --records`); compare.py holds the one set of
rules both use (figures, targets, spread); verdict.py the noise-aware verdicts; report.py
writes report.md.

May import: errors, io, models, profiles, core, config, metrics, engine, plots, real.
Imported by api and cli.
"""
