"""inference: annotating recordings with a trained checkpoint."""
