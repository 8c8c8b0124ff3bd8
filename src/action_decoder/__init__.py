"""Task-aware action decoder for screen recordings (OneVision encoder + Qwen3 prompt side).

Dependency direction: data <- models <- training; evaluation reads outputs and metric logs.
`train.py` / `eval.py` only compose these parts.
"""
from action_decoder.models.towers.fingerprint import register_resolvers as _register_resolvers

_register_resolvers()  # ${tower_fingerprint:...} in conf/backbone must resolve wherever configs are composed
