"""pretraining: the tiny towers pretrained on recorder frames, apart from the decoder training loop."""
