"""plots: readable figures of runs, sweeps, validations and profiles (seaborn, written to
files, never a window). figures.py draws from frames; folders.py reads a run or sweep
folder and writes its figures.

May import: errors, io, metrics (labels from the registry), config (a sweep's scenario,
for its subtitle). Imported by validation and the CLI.
"""
