"""Flax Linen models: ECG ViT encoder/decoder, text encoders, the MERIT two-branch model."""
