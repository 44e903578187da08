"""Data layer: TFDS builders for ECG–report datasets, preprocessing, tokenizer, Grain pipeline."""
