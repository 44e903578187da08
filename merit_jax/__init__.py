"""merit_jax: MERIT ECG–report pretraining in JAX/Flax."""

import os

# TensorFlow is here only for clu's TensorBoard writer (and TFDS picks it up when present):
# keep its start-up notices (oneDNN, INFO logs) off the console unless the user asks for them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"
