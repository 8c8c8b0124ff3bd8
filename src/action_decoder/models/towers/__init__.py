"""towers: the vision (native OneVision) and text (Qwen3) encoders, LoRA on them, where their weights come from, and their fingerprints."""
