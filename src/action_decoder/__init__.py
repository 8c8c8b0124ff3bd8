"""Task-aware action decoder for screen recordings (OneVision encoder + Qwen3 prompt side).

Dependency direction: data <- models <- training; evaluation reads outputs and metric logs.
`train.py` / `eval.py` only compose these parts.
"""
