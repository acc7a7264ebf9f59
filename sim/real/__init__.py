"""real: the same core on a real clock, and runs recorded elsewhere.

live.py drives the core with a real model (validate's live runs); serve.py is `batchsim
serve`, an openpi websocket server that batches through the core, running the model of
runner.py (its admission checks, batches, CUDA graphs); observe.py is `batchsim
observe`, the scenario's robots or arrivals against any openpi server, through client.py
(openpi's client, made careful); wire.py decodes the openpi wire format as a hostile peer
may send it (both serve and observe use it); recorded.py reads recorded runs (batchsim
folders, users' logs) into records.

May import: errors, io, models, profiles, policies, core, config, workload, engine.
Imported by validation, api and cli.
"""
