"""io: files in and out, with clear errors.

files.py reads every input file (text, YAML, CSV, JSON, Parquet) bounded and with one
line on failure; outputs.py checks output paths and writes folders and files whole;
trace.py writes a run's timeline as a Perfetto/Chrome trace.

May import: errors (and core's records, for types only). Imported by everything above.
"""
