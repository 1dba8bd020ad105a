"""Training: the CycleGAN model, its data pipeline, checkpoints and ``train()``."""
