"""The PhysioNet/CinC Challenge 2021 family as one TFDS dataset (configs per source).

One reader serves every source of the Challenge 2021 training data (CPSC2018, Chapman-Shaoxing,
Georgia, Ningbo, ...): WFDB `.hea` headers whose signal file is a MATLAB `.mat` holding a `val`
int array (leads, samples), with gains and baselines in the header (applied by
`wfdb_io.read_wfdb`, which also orders the leads by their header names), and header comments

  # Age: 74
  # Sex: Male
  # Dx: 426783006,164889003

The manual dir may be the Challenge's `training/` folder (or the folder above it): each config
then reads its own sub-folder (`cpsc_2018/`, `chapman_shaoxing/`, ...). It may also be one
source's folder, or any folder of records: the config's record-name prefix (`A` for CPSC2018,
`JS` for Chapman-Shaoxing, ...) then picks the records. `.hea` files are found recursively.

Labels: every config stores the `challenge` task (26 classes scored by the Challenge 2021);
`cpsc2018` also stores `cpsc` (its 9 classes). Maps and the PTB-XL twins of each class are in
`snomed_maps`. A record is kept when at least one of its codes belongs to a class of the
config's tasks; its other codes are ignored and counted (printed after the build and written to
`unknown_snomed_codes.csv` beside `skipped_records.csv`). A record without such a code is
skipped with reason 'no known SNOMED code'.

Signals: stored in mV as float16 at the config's rate (all these sources are 500 Hz; another
native rate is resampled), as the first 10 s of the record. Records shorter than 10 s but at
least `min_seconds` (6 s: CPSC2018's shortest) are zero-padded at the end; shorter ones are
skipped ('too short'). Note that padded zeros then enter per-lead normalisation downstream.

Reports: these datasets have none; `report` is ''. They serve evaluation (linear probes,
zero-shot, cross-dataset transfer), not ECG–text pretraining.

Splits: a single `test` split holding every record, the use being evaluation of models trained
elsewhere. For in-dataset probes `fold` holds a deterministic fold 1-10 (SHA-256 of the record
name), to be used like PTB-XL's strat_fold (1-8 train, 9 validation, 10 test); it is not
stratified and, without patient ids in these headers, not patient-disjoint. `ecg_id` is the
number in the record name (A0001 -> 1, JS00123 -> 123); `patient_id` is -1.
"""

import collections
import csv
import hashlib
import math
import os
import re
from typing import Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds

from merit_jax import atomic_files
from merit_jax.data import schema as features
from merit_jax.data import preprocess
from merit_jax.data import skips
from merit_jax.data import snomed_maps
from merit_jax.data import wfdb_io

PHYSIONET_URL = "https://physionet.org/content/challenge-2021/1.0.3/"
RECORD_SECONDS = 10
NUM_FOLDS = 10
UNKNOWN_CODES_CSV = "unknown_snomed_codes.csv"
# Reasons that tests and the summary rely on.
NO_KNOWN_CODE = "no known SNOMED code"
NO_DX = "no Dx in header"
TOO_SHORT = "too short"
DUPLICATE_NAME = "duplicate record name"

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the PhysioNet/CinC Challenge 2021 training data ({PHYSIONET_URL}), e.g. with
`python -m merit_jax.data.download physionet2021 --target_dir=DIR --include=training/cpsc_2018`,
and pass DIR (or DIR/training, or one source's folder) as the manual dir. Records are WFDB
headers with .mat signals (A0001.hea + A0001.mat, ...) whose header comments give '# Dx:'
SNOMED-CT codes.
"""


class Physionet2021Config(tfds.core.BuilderConfig):
  """One source of the Challenge 2021 data.

  Attributes:
    folder: the source's folder name in the Challenge's `training/` folder.
    prefix: record-name prefix of the source (its records' names start with it).
    sample_rate: storage rate in Hz.
    tasks: label tasks stored (keys of `snomed_maps.TASKS`).
    min_seconds: shorter records are skipped, longer ones under 10 s zero-padded.
  """

  def __init__(self, *, folder: str, prefix: str, sample_rate: int = 500,
               tasks=("challenge",), min_seconds: float = 6.0, **kwargs):
    super().__init__(**kwargs)
    self.folder = folder
    self.prefix = prefix
    self.sample_rate = sample_rate
    self.tasks = tuple(tasks)
    self.min_seconds = min_seconds


def parse_header_comments(comments) -> dict:
  """{'age': float (NaN unknown), 'sex': 0 male / 1 female / -1, 'dx': [codes] or None}."""
  fields = {}
  for comment in comments or ():
    match = re.match(r"^\s*#?\s*([A-Za-z]+)\s*:\s*(.*?)\s*$", comment)
    if match:
      fields.setdefault(match.group(1).lower(), match.group(2))
  try:
    age = float(fields.get("age", "nan"))
  except ValueError:
    age = math.nan
  if not math.isfinite(age) or age < 0:
    age = math.nan
  sex = {"male": 0, "m": 0, "female": 1, "f": 1}.get(fields.get("sex", "").strip().lower(), -1)
  dx = fields.get("dx")
  codes = None
  if dx is not None:
    codes = [c.strip() for c in re.split(r"[,;\s]+", dx) if c.strip()]
  return {"age": age, "sex": sex, "dx": codes}


class LabelEncoder:
  """SNOMED codes -> one multi-hot vector per task; counts codes no task knows."""

  def __init__(self, tasks):
    self.label_names = snomed_maps.label_names(tasks)
    self._targets = collections.defaultdict(list)   # code -> [(task, index)]
    for task in tasks:
      for index, codes in enumerate(snomed_maps.TASKS[task].values()):
        for code in codes:
          self._targets[code].append((task, index))

  def known(self, code: str) -> bool:
    return code in self._targets

  def encode(self, codes) -> dict:
    """Multi-hot uint8 vectors; raises RecordError when no code is known."""
    labels = {task: np.zeros(len(names), np.uint8) for task, names in self.label_names.items()}
    known = [c for c in codes if c in self._targets]
    if not known:
      raise wfdb_io.RecordError(f"{NO_KNOWN_CODE}: {','.join(codes)}")
    for code in known:
      for task, index in self._targets[code]:
        labels[task][index] = 1
    return labels


def record_number(name: str) -> int:
  """The number in a record name (A0001 -> 1); raises RecordError when there is none."""
  digits = re.findall(r"\d+", name)
  if not digits:
    raise wfdb_io.RecordError(f"record name {name!r} holds no number for ecg_id")
  return int(digits[-1])


def record_fold(name: str) -> int:
  """Deterministic fold 1..10 of a record, from the SHA-256 of its name."""
  digest = hashlib.sha256(f"physionet2021:{name}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % NUM_FOLDS + 1


def find_records(manual_dir: str, folder: str, prefix: str) -> list:
  """Sorted paths without extension of the config's `.hea` files under `manual_dir`."""
  roots = [os.path.join(manual_dir, *parts) for parts in
           ((folder,), ("training", folder))]
  roots = [r for r in roots if os.path.isdir(r)] or [manual_dir]
  found = []
  for root in roots:
    for dirpath, dirnames, filenames in os.walk(root):
      dirnames.sort()
      for filename in filenames:
        if filename.endswith(".hea") and filename.startswith(prefix):
          found.append(os.path.join(dirpath, filename[:-len(".hea")]))
  return sorted(found, key=lambda p: (os.path.basename(p), p))


def fixed_window(signal: np.ndarray, sample_rate: int, min_seconds: float) -> np.ndarray:
  """The first `RECORD_SECONDS` of a record, zero-padded when it is at least `min_seconds`."""
  num_samples = RECORD_SECONDS * sample_rate
  length = signal.shape[1]
  if length < min_seconds * sample_rate:
    raise wfdb_io.RecordError(f"{TOO_SHORT}: {length / sample_rate:.2f} s "
                              f"(minimum {min_seconds:g} s)")
  if length >= num_samples:
    return signal[:, :num_samples]
  return np.pad(signal, ((0, 0), (0, num_samples - length)))


def read_header_fields(path: str) -> dict:
  """Age, sex and Dx codes from a record's header comments (see `parse_header_comments`)."""
  import wfdb  # pylint: disable=g-import-not-at-top
  try:
    header = wfdb.rdheader(path)
  except Exception as e:  # pylint: disable=broad-except
    raise wfdb_io.RecordError(f"undecodable header: {path}.hea: {e}") from e
  return parse_header_comments(header.comments)


def make_example(path: str, cfg: Physionet2021Config, encoder: LabelEncoder,
                 unknown_codes: collections.Counter) -> dict:
  """One TFDS example for the record at `path`; raises RecordError when unusable."""
  if not os.path.exists(path + ".hea"):
    raise wfdb_io.RecordError(f"missing header file: {path}.hea")
  fields = read_header_fields(path)
  if not fields["dx"]:
    raise wfdb_io.RecordError(NO_DX)
  labels = encoder.encode(fields["dx"])
  record = wfdb_io.read_wfdb(path)
  signal = record.signal
  if record.sample_rate != cfg.sample_rate:
    signal = preprocess.resample(signal, record.sample_rate, cfg.sample_rate)
  signal = fixed_window(signal, cfg.sample_rate, cfg.min_seconds).astype(np.float16)
  if np.isinf(signal).any():
    raise wfdb_io.RecordError("signal overflows float16")
  # Counted only for records that are kept, so the summary describes the built dataset.
  unknown_codes.update(c for c in fields["dx"] if not encoder.known(c))
  name = os.path.basename(path)
  return {
      "signal": signal,
      "sample_rate": np.int32(cfg.sample_rate),
      "unit": record.unit,
      "report": "",
      "ecg_id": np.int64(record_number(name)),
      "patient_id": np.int64(-1),
      "age": np.float32(fields["age"]),
      "sex": np.int32(fields["sex"]),
      "fold": np.int32(record_fold(name)),
      "labels": labels,
  }


def generate_examples(manual_dir, cfg: Physionet2021Config, skip_log: skips.SkipLog,
                      unknown_codes: collections.Counter,
                      split: str = "test") -> Iterator[tuple]:
  """Yields (record name, example) for the config's records; logs the others to skip_log."""
  manual_dir = os.fspath(manual_dir)
  encoder = LabelEncoder(cfg.tasks)
  seen = {}
  for path in find_records(manual_dir, cfg.folder, cfg.prefix):
    name = os.path.basename(path)
    rel = os.path.relpath(path, manual_dir)
    if name in seen:
      skip_log.add(name, rel, f"{DUPLICATE_NAME}: also {seen[name]}", split=split)
      continue
    seen[name] = rel
    try:
      example = make_example(path, cfg, encoder, unknown_codes)
    except wfdb_io.RecordError as e:
      skip_log.add(name, rel, e.reason, split=split)
      continue
    skip_log.count_used(split)
    yield name, example


def write_unknown_codes(counts: collections.Counter, directory: str) -> str:
  """Writes `unknown_snomed_codes.csv` (code, description, records) atomically."""
  path = os.path.join(directory, UNKNOWN_CODES_CSV)
  with atomic_files.replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["code", "description", "records"])
    for code, n in counts.most_common():
      writer.writerow([code, snomed_maps.code_description(code), n])
  return path


def check_manual_dir(manual_dir, cfg: Physionet2021Config) -> None:
  """Raises FileNotFoundError, saying what was expected where, when no record is found."""
  if manual_dir is None or not os.path.isdir(manual_dir):
    raise FileNotFoundError(
        f"PhysioNet/CinC 2021 manual dir {manual_dir!r} does not exist.\n"
        f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  manual_dir = os.fspath(manual_dir)
  if not find_records(manual_dir, cfg.folder, cfg.prefix):
    raise FileNotFoundError(
        f"no '{cfg.prefix}*.hea' record for config {cfg.name!r} under {manual_dir} (looked "
        f"in {cfg.folder}/ and training/{cfg.folder}/ first).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")


def _configs():
  both = ("cpsc", "challenge")
  return [
      Physionet2021Config(name="cpsc2018", folder="cpsc_2018", prefix="A", tasks=both,
                          description="CPSC2018 (6,877 records, 500 Hz, 6-60 s)"),
      Physionet2021Config(name="csn", folder="chapman_shaoxing", prefix="JS",
                          description="Chapman-Shaoxing (10,247 records, 500 Hz, 10 s)"),
      Physionet2021Config(name="georgia", folder="georgia", prefix="E",
                          description="Georgia 12-lead ECG challenge (10,344 records, 500 Hz)"),
      Physionet2021Config(name="ningbo", folder="ningbo", prefix="JS",
                          description="Ningbo First Hospital (34,905 records, 500 Hz, 10 s)"),
  ]


class Physionet2021(tfds.core.GeneratorBasedBuilder):
  """PhysioNet/CinC Challenge 2021 sources with SNOMED-CT labels (evaluation only)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = _configs()
  DEFAULT_BUILDER_CONFIG_NAME = "cpsc2018"

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    names = snomed_maps.label_names(cfg.tasks)
    return self.dataset_info_from_configs(
        features=features.ecg_features(RECORD_SECONDS * cfg.sample_rate,
                                       {task: len(n) for task, n in names.items()}),
        supervised_keys=None,
        homepage=PHYSIONET_URL,
        citation=(
            "Reyna, M. A., Sadr, N., Perez Alday, E. A., Gu, A., Shah, A. J., Robichaux, C., "
            "Rad, A. B., Elola, A., Seyedi, S., Ansari, S., Ghanbari, H., Li, Q., Sharma, A., "
            "Clifford, G. D. (2021). Will Two Do? Varying Dimensions in Electrocardiography: "
            "The PhysioNet/Computing in Cardiology Challenge 2021. Computing in Cardiology 48."),
        metadata=tfds.core.MetadataDict(
            label_names=names,
            ptbxl_equivalents={task: dict(snomed_maps.PTBXL_EQUIVALENTS[task])
                               for task in cfg.tasks}),
    )

  def _download_and_prepare(self, dl_manager, download_config=None, **kwargs):
    # `self.data_dir` is TFDS's `incomplete.*` folder here, renamed to the version folder only
    # when everything succeeded, so the logs are published together with the data.
    self._skip_log = skips.SkipLog()
    self._unknown_codes = collections.Counter()
    super()._download_and_prepare(dl_manager, download_config=download_config, **kwargs)
    self._skip_log.write(self.data_dir)
    write_unknown_codes(self._unknown_codes, self.data_dir)
    name = f"{self.name}/{self.builder_config.name}"
    self._skip_log.print_summary(name)
    if self._unknown_codes:
      top = ", ".join(f"{snomed_maps.code_description(c)} x{n}"
                      for c, n in self._unknown_codes.most_common(10))
      print(f"{name}: {sum(self._unknown_codes.values())} unmapped SNOMED codes "
            f"({len(self._unknown_codes)} distinct) ignored in kept records; most common: "
            f"{top}", flush=True)

  @property
  def skip_log(self) -> Optional[skips.SkipLog]:
    """The skips of the last build made by this builder object (None if it built nothing)."""
    return getattr(self, "_skip_log", None)

  @property
  def unknown_codes(self) -> Optional[collections.Counter]:
    """Unmapped code -> number of kept records holding it, for the last build."""
    return getattr(self, "_unknown_codes", None)

  def validate_manual_dir(self, manual_dir) -> None:
    """Fails before any work (used by `build.py`) when `manual_dir` holds no config record."""
    check_manual_dir(manual_dir, self.builder_config)

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    manual_dir = getattr(dl_manager, "_manual_dir", None)
    check_manual_dir(manual_dir, cfg)
    manual_dir = os.fspath(manual_dir)
    if not hasattr(self, "_skip_log"):
      self._skip_log = skips.SkipLog()
      self._unknown_codes = collections.Counter()
    return {"test": generate_examples(manual_dir, cfg, self._skip_log, self._unknown_codes)}

  def _generate_examples(self, *args, **kwargs):
    # Examples come from `generate_examples`, returned directly by `_split_generators`.
    raise NotImplementedError
