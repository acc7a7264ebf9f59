"""cli: the `batchsim` command line. Each command parses its flags, calls one function of
the API (sim/api.py) and renders what it returns; flag names, and errors about flags,
live only here (an API error names a parameter, `InputError.option`, and the command
names it by its flag).

app.py holds the application and `main`; render.py what is printed; options.py the
shared options and flag-text parsing; one module per command group: run.py (run, plot),
experiments.py (sweep, recommend), validate.py, profiling.py (profile, plot-profile,
estimate, gpus), serving.py (serve, observe).

May import: everything (it is the top). Imported by nothing but `python -m sim.cli`.
"""

from sim.cli import experiments, profiling, run, serving, validate
from sim.cli.app import app, main, register

register(
    run.run,
    experiments.sweep,
    experiments.recommend,
    run.plot,
    validate.validate,
    profiling.profile,
    profiling.plot_profile,
    profiling.estimate,
    serving.serve,
    serving.observe,
    profiling.gpus,
)

__all__ = ["app", "main"]
