"""All metrics of generated ECG reports at once, per-record statistics and bootstrap intervals.

`report_generation_metrics(generated, references, labels, with_meteor)` gives BLEU-1..4
(sacrebleu), ROUGE-L (rouge-score), METEOR (nltk; all three through `metrics.text`) and
clinical micro/macro F1 (`metrics.clinical`) as one flat dict. Confidence intervals:
`bootstrap_generation_metrics(generated, references, labels, with_meteor, n_bootstrap, seed,
alpha, baseline_generated)` -> {metric: {'value', 'ci_low',
'ci_high'[, 'diff', 'diff_ci_low', 'diff_ci_high']}}: percentile bootstrap over records (drawn
with replacement by the package's one resampler, `classification.iter_resample_indices`, which
keeps a record of every labelled SCP code in every resample, so the resamples' macro F1
averages the same codes as the point estimate), and with a baseline the paired difference on
the same resampled records. Each record is scored once (`record_statistics`: sacrebleu's
per-segment BLEU statistics, ROUGE-L and METEOR scores, per-code clinical tp/fp/fn); a
resample only re-sums those rows (`bootstrap_from_statistics`, `resampled_metrics`,
`resample_indices`), and its BLEU is sacrebleu's corpus score of the summed statistics, i.e.
exactly `corpus_score` on the resampled records.
"""

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from merit_jax.metrics import classification
from merit_jax.metrics import clinical
from merit_jax.metrics import text
from merit_jax.metrics.text import Refs

def report_generation_metrics(
    generated: Sequence[str],
    references: Refs,
    labels: Sequence[Iterable[str]] | None = None,
    with_meteor: bool = True,
) -> dict[str, float]:
  """BLEU-1..4, ROUGE-L, METEOR and (given labels) clinical micro/macro F1, flat dict, each in
  [0, 1] (sacrebleu's BLEU / 100)."""
  out = dict(text.corpus_bleu(generated, references))
  out["rouge_l"] = text.rouge_l(generated, references)
  if with_meteor:
    out["meteor"] = text.meteor(generated, references)
  if labels is not None:
    scores = clinical.clinical_f1(generated, labels)
    out["clinical_micro_f1"] = scores["micro_f1"]
    out["clinical_macro_f1"] = scores["macro_f1"]
  return out


# -------------------------------------------------------------------------------- bootstrap

GENERATION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "meteor",
                      "clinical_micro_f1", "clinical_macro_f1")
_BLEU_MAX_N = text.BLEU_MAX_N


@dataclasses.dataclass(frozen=True)
class RecordStatistics:
  """Per-record sufficient statistics of `report_generation_metrics` for one system.

  Each metric of any multiset of records is a function of sums (BLEU, clinical F1) or means
  (ROUGE-L, METEOR) of these rows, so a bootstrap resample re-sums rows and never re-scores
  text (METEOR, the slow one, runs once per record).

  Attributes:
    bleu: int64 (N, 10), sacrebleu's per-segment BLEU statistics (`text.bleu_statistics`):
      hypothesis length, closest reference length, matched and total n-grams for n = 1..4.
    rouge_l: float64 (N,), per-record ROUGE-L.
    meteor: float64 (N,), per-record METEOR; None when not computed.
    codes: the SCP codes predicted or labelled in at least one record (sorted); None without
      labels. Other codes have no true positive nor false negative in any resample, so they
      never enter the macro average.
    tp, fp, fn: int64 (N, len(codes)) per record and code; None without labels.
  """
  bleu: np.ndarray
  rouge_l: np.ndarray
  meteor: np.ndarray | None = None
  codes: tuple[str, ...] | None = None
  tp: np.ndarray | None = None
  fp: np.ndarray | None = None
  fn: np.ndarray | None = None

  @property
  def num_records(self) -> int:
    return int(self.rouge_l.shape[0])

  @property
  def metric_names(self) -> tuple[str, ...]:
    """The metrics these statistics give, in `GENERATION_METRICS` order."""
    names = [f"bleu{n}" for n in range(1, _BLEU_MAX_N + 1)] + ["rouge_l"]
    if self.meteor is not None:
      names.append("meteor")
    if self.codes is not None:
      names += ["clinical_micro_f1", "clinical_macro_f1"]
    return tuple(names)


def record_statistics(
    generated: Sequence[str],
    references: Refs,
    labels: Sequence[Iterable[str]] | None = None,
    with_meteor: bool = True,
) -> RecordStatistics:
  """Scores every record once: the statistics `report_generation_metrics` aggregates.

  Args:
    generated: generated report texts (N).
    references: per record, one reference text or several.
    labels: per record, its SCP codes; None leaves clinical F1 out.
    with_meteor: whether to score METEOR (needs nltk and WordNet).

  Raises:
    ValueError: when `references` or `labels` do not have one entry per generated report.
  """
  refs_lists = text.reference_lists(generated, references)
  records = None if labels is None else clinical.clinical_records(generated, labels)
  n = len(generated)
  stats = dict(
      bleu=text.bleu_statistics(generated, refs_lists),
      rouge_l=np.asarray(text.rouge_l_scores(generated, refs_lists), np.float64).reshape(n))
  if with_meteor:
    stats["meteor"] = np.asarray(text.meteor_scores(generated, refs_lists), np.float64).reshape(n)
  if records is not None:
    codes = tuple(sorted(set().union(*(pred | true for pred, true in records))))
    col = {c: j for j, c in enumerate(codes)}
    tp, fp, fn = (np.zeros((n, len(codes)), np.int64) for _ in range(3))
    for i, (pred, true) in enumerate(records):
      for array, found in ((tp, pred & true), (fp, pred - true), (fn, true - pred)):
        array[i, [col[c] for c in found]] = 1
    stats.update(codes=codes, tp=tp, fp=fp, fn=fn)
  return RecordStatistics(**stats)


def metrics_from_statistics(stats: RecordStatistics) -> dict[str, float]:
  """The metrics of all records: exactly `report_generation_metrics` on the same inputs."""
  # Same scalar arithmetic, in the same order, as corpus_bleu / rouge_l / meteor / clinical_f1
  # (integer sums are exact), so the values agree to the last bit, not just closely.
  out = text.bleu_from_statistics(stats.bleu.sum(axis=0))
  rouge = stats.rouge_l.tolist()
  out["rouge_l"] = sum(rouge) / len(rouge) if rouge else 0.0
  if stats.meteor is not None:
    total = 0.0
    for score in stats.meteor.tolist():
      total += score
    out["meteor"] = total / stats.num_records if stats.num_records else 0.0
  if stats.codes is not None:
    sums = [dict(zip(stats.codes, (int(x) for x in a.sum(axis=0))))
            for a in (stats.tp, stats.fp, stats.fn)]
    scores = clinical.clinical_summary(*sums)
    out["clinical_micro_f1"] = scores["micro_f1"]
    out["clinical_macro_f1"] = scores["macro_f1"]
  return out


def _label_cover(*all_stats: RecordStatistics | None) -> np.ndarray | None:
  """bool (N, codes): for each code in some record's labels, the records labelled with it.

  The bootstrap keeps one of them in every resample (`classification.iter_resample_indices`),
  so each resample's clinical macro F1 averages the same codes as the point estimate. None
  without labels (then the bootstrap is the plain one).
  """
  columns = [(s.tp + s.fn) > 0 for s in all_stats if s is not None and s.codes is not None]
  if not columns:
    return None
  cover = np.concatenate(columns, axis=1)
  return cover[:, cover.any(axis=0)]


def resample_indices(num_records: int, n_bootstrap: int, seed: int = 0,
                     stats: RecordStatistics | None = None,
                     baseline: RecordStatistics | None = None) -> np.ndarray:
  """int64 (n_bootstrap, num_records): each resample's records, as `bootstrap_from_statistics`
  draws them for the same seed, `stats` and `baseline` (with replacement, keeping a record of
  every labelled code: `classification.iter_resample_indices`). Without `stats`, the plain
  bootstrap."""
  _check_bootstrap_args(num_records, n_bootstrap)
  return classification.resample_indices(num_records, int(n_bootstrap), seed,
                                         _label_cover(stats, baseline))


def _metrics_of_weights(stats: RecordStatistics, w: np.ndarray) -> dict[str, np.ndarray]:
  """Every metric (B,) of B weighted record multisets (rows of w, each summing to N)."""
  # Summed statistics are integers (w holds counts; float64 sums are exact below 2**53); each
  # resample's BLEU is sacrebleu's own score of them, not a re-implementation of its smoothing.
  sums = np.rint(w @ stats.bleu.astype(np.float64)).astype(np.int64)
  bleu = [text.bleu_from_statistics(row) for row in sums.tolist()]
  out = {f"bleu{n}": np.asarray([b[f"bleu{n}"] for b in bleu], np.float64)
         for n in range(1, _BLEU_MAX_N + 1)}
  num = stats.num_records
  out["rouge_l"] = w @ stats.rouge_l / num
  if stats.meteor is not None:
    out["meteor"] = w @ stats.meteor / num
  if stats.codes is not None:
    tp, fp, fn = (w @ a.astype(np.float64) for a in (stats.tp, stats.fp, stats.fn))

    def f1(t_, p_, n_):
      return np.where(t_ > 0, 2 * t_ / np.maximum(2 * t_ + p_ + n_, 1.0), 0.0)

    out["clinical_micro_f1"] = f1(tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1))
    # As clinical_f1: the macro mean runs over the codes present in this resample's labels
    # (from `resample_indices`/`bootstrap_from_statistics`: every code of the full labels).
    present = (tp + fn) > 0
    count = present.sum(axis=1)
    out["clinical_macro_f1"] = np.where(
        count > 0, np.sum(f1(tp, fp, fn) * present, axis=1) / np.maximum(count, 1), 0.0)
  return out


def resampled_metrics(stats: RecordStatistics, indices: np.ndarray) -> dict[str, np.ndarray]:
  """Each metric (B,) on each resample; `indices` (B, N) as from `resample_indices`."""
  indices = np.asarray(indices)
  if indices.ndim != 2 or indices.shape[1] != stats.num_records:
    raise ValueError(f"indices must be (B, {stats.num_records}), got {indices.shape}")
  chunk = max(1, classification.BOOTSTRAP_CHUNK_ELEMENTS // max(stats.num_records, 1))
  parts = [_metrics_of_weights(
      stats, classification.resample_weights(indices[s:s + chunk], stats.num_records))
           for s in range(0, indices.shape[0], chunk)]
  return {k: np.concatenate([p[k] for p in parts]) for k in stats.metric_names}


def _check_bootstrap_args(num_records: int, n_bootstrap, alpha: float = 0.05) -> None:
  if isinstance(n_bootstrap, bool) or int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
    raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1) (0.05 gives 95 % intervals), got {alpha!r}")
  if num_records < 1:
    raise ValueError("bootstrap needs at least one record to resample")


def bootstrap_from_statistics(
    stats: RecordStatistics,
    baseline: RecordStatistics | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict[str, float]]:
  """Percentile bootstrap intervals over records from precomputed `record_statistics`.

  Args:
    stats: the system's per-record statistics.
    baseline: another system's statistics on the same records in the same order (same
      references and labels); adds paired differences stats − baseline.
    n_bootstrap: number of resamples (N records drawn with replacement per resample, keeping
      at least one record of every code in the labels: see
      `classification.iter_resample_indices`).
    seed: resampling seed; the same seed gives the same resamples.
    alpha: 0.05 gives 95 % intervals (the alpha/2 and 1 − alpha/2 percentiles).

  Returns:
    {metric: {'value', 'ci_low', 'ci_high'}} for each metric of `stats.metric_names`, plus
    'diff', 'diff_ci_low', 'diff_ci_high' with a baseline: the difference is taken within
    each resample (the same records for both systems), so record-to-record variation that
    both systems share cancels out.

  Raises:
    ValueError: for n_bootstrap < 1, alpha outside (0, 1), no records, or a baseline with
      other records or metrics.
  """
  num = stats.num_records
  _check_bootstrap_args(num, n_bootstrap, alpha)
  names = stats.metric_names
  if baseline is not None:
    if baseline.num_records != num:
      raise ValueError(f"baseline has {baseline.num_records} records, the system {num}")
    if baseline.metric_names != names:
      raise ValueError(f"baseline metrics {baseline.metric_names} differ from {names}")
  samples = {k: [] for k in names}
  diffs = {k: [] for k in names}
  # One set of resamples for both systems (paired), each keeping a record of every labelled
  # code (`_label_cover`), drawn by the shared `classification.iter_resample_indices`.
  for indices in classification.iter_resample_indices(num, int(n_bootstrap), seed,
                                                      _label_cover(stats, baseline)):
    w = classification.resample_weights(indices, num)
    own = _metrics_of_weights(stats, w)
    base = None if baseline is None else _metrics_of_weights(baseline, w)
    for k in names:
      samples[k].append(own[k])
      if base is not None:
        diffs[k].append(own[k] - base[k])
  value = metrics_from_statistics(stats)
  base_value = None if baseline is None else metrics_from_statistics(baseline)
  q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
  out = {}
  for k in names:
    low, high = np.percentile(np.concatenate(samples[k]), q)
    out[k] = {"value": value[k], "ci_low": float(low), "ci_high": float(high)}
    if base_value is not None:
      d_low, d_high = np.percentile(np.concatenate(diffs[k]), q)
      out[k].update(diff=value[k] - base_value[k], diff_ci_low=float(d_low),
                    diff_ci_high=float(d_high))
  return out


def bootstrap_generation_metrics(
    generated: Sequence[str],
    references: Refs,
    labels: Sequence[Iterable[str]] | None = None,
    with_meteor: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    baseline_generated: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
  """`report_generation_metrics` with percentile bootstrap CIs over records.

  Args:
    generated: generated report texts (N).
    references: per record, one reference text or several.
    labels: per record, its SCP codes; None leaves clinical F1 out.
    with_meteor: whether to score METEOR.
    n_bootstrap: number of resamples.
    seed: resampling seed.
    alpha: 0.05 gives 95 % intervals.
    baseline_generated: another system's reports for the same N records; adds the paired
      bootstrap difference generated − baseline.

  Returns:
    See `bootstrap_from_statistics`; 'value' equals `report_generation_metrics` exactly.
  """
  n = len(generated)
  _check_bootstrap_args(n, n_bootstrap, alpha)
  if baseline_generated is not None and len(baseline_generated) != n:
    raise ValueError(f"{n} generated reports but {len(baseline_generated)} baseline reports")
  stats = record_statistics(generated, references, labels, with_meteor)
  baseline = (None if baseline_generated is None else
              record_statistics(baseline_generated, references, labels, with_meteor))
  return bootstrap_from_statistics(stats, baseline, n_bootstrap, seed, alpha)
