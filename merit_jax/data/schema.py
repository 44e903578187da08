"""The TFDS example schema shared by every ECG builder, and the PTB-XL task definitions."""

import numpy as np
import tensorflow_datasets as tfds

from merit_jax.data import wfdb_io

# PTB-XL benchmark tasks (Strodthoff et al. 2020): full name -> short name. The full names are
# the keys of the `labels` feature and of `info.metadata['label_names']`.
PTBXL_TASKS = {
    "all": "all",                       # 71: every SCP statement
    "diagnostic": "diag",               # 44: statements with diagnostic == 1
    "subdiagnostic": "sub",             # 23: diagnostic_subclass of diagnostic statements
    "superdiagnostic": "super",         # 5: diagnostic_class of diagnostic statements
    "form": "form",                     # 19: statements with form == 1
    "rhythm": "rhythm",                 # 12: statements with rhythm == 1
}
PTBXL_TASK_SIZES = {"all": 71, "diagnostic": 44, "subdiagnostic": 23,
                    "superdiagnostic": 5, "form": 19, "rhythm": 12}
NUM_LEADS = len(wfdb_io.STANDARD_LEADS)


def ecg_features(num_samples: int, label_sizes: dict) -> tfds.features.FeaturesDict:
  """FeaturesDict of one ECG example (schema in docs/ARCHITECTURE.md).

  Args:
    num_samples: samples per lead of the stored signal.
    label_sizes: task name -> number of classes; each becomes a uint8 multi-hot vector in
      `labels`. May be empty for datasets without labels.
  """
  labels = {task: tfds.features.Tensor(shape=(int(size),), dtype=np.uint8)
            for task, size in label_sizes.items()}
  return tfds.features.FeaturesDict({
      # Raw bytes: stored as real float16 (a FloatList would hold float32) and serialised
      # without a Python loop over every sample (500 Hz build 16 s -> 3.4 s).
      "signal": tfds.features.Tensor(shape=(NUM_LEADS, int(num_samples)), dtype=np.float16,
                                     encoding=tfds.features.Encoding.BYTES),
      "sample_rate": tfds.features.Scalar(dtype=np.int32),
      "unit": tfds.features.Text(),
      "report": tfds.features.Text(),
      "ecg_id": tfds.features.Scalar(dtype=np.int64),
      "patient_id": tfds.features.Scalar(dtype=np.int64),
      "age": tfds.features.Scalar(dtype=np.float32),
      "sex": tfds.features.Scalar(dtype=np.int32),
      "fold": tfds.features.Scalar(dtype=np.int32),
      "labels": tfds.features.FeaturesDict(labels),
  })
