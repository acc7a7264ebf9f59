"""batchsim: simulate batching schedulers for VLA robot-policy inference."""

__version__ = "0.1.0"
