"""PTB-XL as a TFDS dataset (configs `100hz`, `500hz`, `*_ecg_only`), with the benchmark's labels.

Reads the PhysioNet layout from the manual dir: `ptbxl_database.csv`, `scp_statements.csv` and
`records100/NNNNN/NNNNN_lr.{hea,dat}` / `records500/NNNNN/NNNNN_hr.{hea,dat}`. Partial downloads
are fine: only records that have both a database row and readable files become examples; every
other one is written with its reason to `skipped_records.csv` in the dataset's version folder.

Labels follow the PTB-XL benchmark (Strodthoff et al. 2020): every key of `scp_codes` counts,
whatever its likelihood, and is aggregated through `scp_statements.csv` into the tasks of
`features.PTBXL_TASKS`. The sorted label names of each task are stored in
`info.metadata['label_names'][task]`, in the column order of the `labels/<task>` vectors.

ECG-only configs (`100hz_ecg_only`, `500hz_ecg_only`) hold exactly the record files on disk
that the paired config leaves out for lack of a usable report: files without a database row
(their `strat_fold` from a fold table, `records_index.csv` or else `labels_merl/*.csv` in the
manual dir) and rows whose report is empty or undecodable (fold from the row). The two configs
never share a record (one with a report the paired config cannot use, e.g. for an unknown SCP
code, is in neither). Their `report` is "" and every label vector is all zero because the
labels are UNKNOWN, not negative: these builds are for self-supervised (masked-signal)
pretraining only and must never be used for evaluation. Records that do have a usable report
are not listed in their skip log, only counted in the printed summary.

The tables and labels are read by `ptbxl_tables`, the examples made by `ptbxl_records`; this
module holds the builder.
"""

import os
from typing import Optional

import tensorflow_datasets as tfds

from merit_jax.data import ptbxl_records
from merit_jax.data import ptbxl_tables
from merit_jax.data import schema as features
from merit_jax.data import skips

# The tables' names the builder uses; `ptbxl_label_names` stays importable from here too.
PHYSIONET_URL = ptbxl_tables.PHYSIONET_URL
DATABASE_CSV = ptbxl_tables.DATABASE_CSV
STATEMENTS_CSV = ptbxl_tables.STATEMENTS_CSV
RECORD_SECONDS = ptbxl_tables.RECORD_SECONDS
SPLIT_FOLDS = ptbxl_tables.SPLIT_FOLDS
ptbxl_label_names = ptbxl_tables.ptbxl_label_names

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download PTB-XL 1.0.3 from PhysioNet ({PHYSIONET_URL}), e.g. with
`python -m merit_jax.data.download ptbxl --target_dir=DIR`, and pass DIR as the manual dir.
DIR must hold {DATABASE_CSV}, {STATEMENTS_CSV} and records100/ (config 100hz) or records500/
(config 500hz) in the PhysioNet layout (records100/00000/00001_lr.hea + .dat, ...). A partial
download is fine: records without files or without a database row are skipped and listed in
skipped_records.csv.
"""


def check_manual_dir(manual_dir, sample_rate: int, ecg_only: bool = False) -> None:
  """Fails at once, saying what was expected where, when `manual_dir` cannot be a PTB-XL copy.

  With `ecg_only`, the manual dir must also hold a fold table (see
  `ptbxl_records.find_fold_table`).
  """
  records = ptbxl_tables.records_dir_name(sample_rate)
  if manual_dir is None:
    raise FileNotFoundError(
        f"No manual dir given for PTB-XL. Expected a folder with {DATABASE_CSV}, "
        f"{STATEMENTS_CSV} and {records}/.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(
        f"PTB-XL manual dir {manual_dir!r} does not exist. Expected a folder with "
        f"{DATABASE_CSV}, {STATEMENTS_CSV} and {records}/.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  missing = [name for name in (DATABASE_CSV, STATEMENTS_CSV, records)
             if not os.path.exists(os.path.join(manual_dir, name))]
  if missing:
    raise FileNotFoundError(
        f"PTB-XL manual dir {manual_dir!r} lacks {missing} (expected {DATABASE_CSV}, "
        f"{STATEMENTS_CSV} and {records}/ there).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  if ecg_only:
    ptbxl_records.find_fold_table(manual_dir)


class PtbxlConfig(tfds.core.BuilderConfig):
  """A PTB-XL sampling rate; `ecg_only` for the records without a usable report."""

  def __init__(self, *, sample_rate: int, ecg_only: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.sample_rate = sample_rate
    self.ecg_only = ecg_only


class Ptbxl(tfds.core.GeneratorBasedBuilder):
  """PTB-XL 12-lead ECGs with reports and benchmark labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      PtbxlConfig(name="100hz", description="records100 (100 Hz, 1,000 samples)",
                  sample_rate=100),
      PtbxlConfig(name="500hz", description="records500 (500 Hz, 5,000 samples)",
                  sample_rate=500),
      PtbxlConfig(name="100hz_ecg_only", sample_rate=100, ecg_only=True,
                  description="records100 files without a usable report (no row, or an "
                  "empty/undecodable one); empty reports, all-zero (unknown) labels: "
                  "self-supervised pretraining only, never evaluation"),
      PtbxlConfig(name="500hz_ecg_only", sample_rate=500, ecg_only=True,
                  description="records500 files without a usable report (no row, or an "
                  "empty/undecodable one); empty reports, all-zero (unknown) labels: "
                  "self-supervised pretraining only, never evaluation"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "100hz"
  # Label vector sizes (fixed by the schema); scp_statements.csv must agree.
  LABEL_SIZES = features.PTBXL_TASK_SIZES

  def _info(self) -> tfds.core.DatasetInfo:
    sample_rate = self.builder_config.sample_rate
    return self.dataset_info_from_configs(
        features=features.ecg_features(RECORD_SECONDS * sample_rate, self.LABEL_SIZES),
        supervised_keys=None,
        homepage=PHYSIONET_URL,
        citation=(
            "Wagner, P., Strodthoff, N., Bousseljot, R.-D., Kreiseler, D., Lunze, F.I., "
            "Samek, W., Schaeffter, T. (2020). PTB-XL, a large publicly available "
            "electrocardiography dataset. Scientific Data 7, 154."),
        metadata=tfds.core.MetadataDict(),
    )

  def validate_manual_dir(self, manual_dir) -> None:
    """Raises FileNotFoundError, saying what is expected where, for an unusable manual dir."""
    check_manual_dir(manual_dir, self.builder_config.sample_rate, self._ecg_only)

  def manual_dir_to_read(self, dl_manager) -> str:
    """The folder in the PTB-XL layout to read; subclasses (synthetic data) override it."""
    # The private attribute, because `dl_manager.manual_dir` raises TFDS's own, less
    # specific error for a missing folder.
    manual_dir = getattr(dl_manager, "_manual_dir", None)
    self.validate_manual_dir(manual_dir)
    return os.fspath(manual_dir)

  def _download_and_prepare(self, dl_manager, download_config=None, **kwargs):
    # `self.data_dir` is TFDS's `incomplete.*` folder here, renamed to the version folder only
    # when everything succeeded, so the skip log is published together with the data.
    self._skip_log = skips.SkipLog()
    super()._download_and_prepare(dl_manager, download_config=download_config, **kwargs)
    self._skip_log.write(self.data_dir)
    self._skip_log.print_summary(f"{self.name}/{self.builder_config.name}")
    if self._ecg_only:
      print(f"  {getattr(self, '_num_reported', 0):6d}  not listed: have a usable report (in "
            f"the paired config)", flush=True)

  @property
  def _ecg_only(self) -> bool:
    # Subclasses' configs (synthetic_ecg) may predate the attribute.
    return bool(getattr(self.builder_config, "ecg_only", False))

  @property
  def skip_log(self) -> Optional[skips.SkipLog]:
    """The skips of the last build made by this builder object (None if it built nothing)."""
    return getattr(self, "_skip_log", None)

  def _split_generators(self, dl_manager):
    sample_rate = self.builder_config.sample_rate
    manual_dir = self.manual_dir_to_read(dl_manager)
    tables = ptbxl_tables.PtbxlTables.load(manual_dir)
    label_names = tables.encoder.label_names
    sizes = {task: len(names) for task, names in label_names.items()}
    if sizes != dict(self.LABEL_SIZES):
      raise ValueError(
          f"{os.path.join(manual_dir, STATEMENTS_CSV)} defines label sets of sizes {sizes}, "
          f"expected {dict(self.LABEL_SIZES)} (the PTB-XL scp_statements.csv)")
    self.info.metadata["label_names"] = label_names
    if not hasattr(self, "_skip_log"):
      self._skip_log = skips.SkipLog()
    if self._ecg_only:
      fold_table = ptbxl_records.FoldTable.load(manual_dir)
      self.info.metadata["ecg_only"] = True
      self.info.metadata["labels_known"] = False
      self.info.metadata["fold_table"] = fold_table.source
      plan, self._num_reported = ptbxl_records.plan_ecg_only(
          manual_dir, sample_rate, self._skip_log, tables, fold_table)
      # TFDS fails on a split without examples, and a partial copy can easily have no
      # ECG-only record of fold 9 or 10: such splits are left out of the build.
      empty = [split for split in SPLIT_FOLDS if not plan[split]]
      if len(empty) == len(SPLIT_FOLDS):
        raise ValueError(
            f"{self.name}/{self.builder_config.name} would be empty: of the "
            f"{ptbxl_tables.records_dir_name(sample_rate)} files in {manual_dir!r}, "
            f"{self._num_reported} have a usable report (they belong to the paired config) "
            f"and {len(self._skip_log)} others have no usable fold in {fold_table.source} "
            f"or {DATABASE_CSV}")
      if empty:
        print(f"{self.name}/{self.builder_config.name}: no ECG-only records for split(s) "
              f"{empty}; built without them", flush=True)
      return {split: self._generate_ecg_only(manual_dir, split, plan[split], tables)
              for split in SPLIT_FOLDS if plan[split]}
    ptbxl_records.log_unassigned_records(manual_dir, sample_rate, self._skip_log, tables)
    return {split: self._generate_examples(manual_dir, split, tables)
            for split in SPLIT_FOLDS}

  def _generate_examples(self, manual_dir, split, tables):
    yield from ptbxl_records.generate_examples(manual_dir, split, self.builder_config.sample_rate,
                                               self._skip_log, tables)

  def _generate_ecg_only(self, manual_dir, split, records, tables):
    yield from ptbxl_records.generate_ecg_only_examples(
        manual_dir, split, self.builder_config.sample_rate, self._skip_log, records,
        tables.encoder)

