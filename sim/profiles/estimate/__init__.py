"""profiles.estimate: a measured profile moved to another GPU by a calibrated roofline.

work.py counts a model's work per kernel on torch's meta device; gpus.py is the GPU
table (dense bf16, bandwidth, memory, L2) with sources; roofline.py fits the factors on
the measured GPU and scales every sample to the target (`batchsim estimate`).

May import: errors, io, models, profiles. Imported by api and cli.
"""
