"""ECG→report and report→ECG retrieval Recall@K from paired embedding matrices.

Public API:

- `recall_at_k(ecg_emb, text_emb, ks=(1, 5, 10), texts=None, group_ids=None) -> dict`.
  Row i of `ecg_emb` (N, d) and row i of `text_emb` (N, d') belong to the same record; both are
  compared by cosine similarity (rows are L2-normalised here, so any scale is fine). Keys:
  `ecg_to_report/R@k`, `report_to_ecg/R@k`, `chance/ecg_to_report/R@k`,
  `chance/report_to_ecg/R@k` (fractions in [0, 1]), plus `ecg_to_report/median_rank`,
  `report_to_ecg/median_rank` (1 = best) and `num_queries`.

Duplicate reports: PTB-XL and machine-generated reports repeat word for word (e.g. "sinus
rhythm. normal ecg."). A query cannot tell identical texts apart, so every item of the query's
group counts as a correct match: ECG i retrieves correctly if any report whose text is identical
to report i is in the top K; report j retrieves correctly if any ECG whose report is identical to
report j is in the top K. Groups come from `group_ids` (N,) when given, else from `texts` (exact
match after stripping and collapsing whitespace), else every record is its own group. The
gallery keeps the duplicates (it is not de-duplicated).

Ties in similarity are counted against the query (a wrong item with the same similarity as the
best correct one ranks ahead of it), so degenerate constant embeddings score chance, not 1.

Chance level of a query with m correct items among N: 1 - C(N-m, K) / C(N, K), averaged over
queries (K/N without duplicates).

`Evaluator` (config `evals.retrieval`: ks, split): Recall@K on the records of `split` that
have a report, for encoders with a text tower.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from merit_jax.evaluators import registry
from merit_jax.evaluators import tasks as tasks_lib

_QUERY_CHUNK = 1024


def _normalise(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2:
    raise ValueError(f"recall_at_k: {name} must be (N, dim), got {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"recall_at_k: {name} contains NaN or inf")
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _groups(num: int, texts, group_ids) -> np.ndarray:
  if group_ids is not None:
    group_ids = np.asarray(group_ids)
    if group_ids.shape != (num,):
      raise ValueError(f"recall_at_k: group_ids must have shape ({num},), got {group_ids.shape}")
    _, inverse = np.unique(group_ids, return_inverse=True)
    return inverse.reshape(-1)
  if texts is not None:
    if len(texts) != num:
      raise ValueError(f"recall_at_k: {len(texts)} texts for {num} embeddings")
    keys = [" ".join(str(t).split()) for t in texts]
    _, inverse = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    return inverse.reshape(-1)
  return np.arange(num)


def _ranks(queries: np.ndarray, gallery: np.ndarray, query_groups: np.ndarray,
           gallery_groups: np.ndarray) -> np.ndarray:
  """1-based rank of the best correct gallery item for each query (ties count against it)."""
  ranks = np.empty(queries.shape[0], dtype=np.int64)
  for start in range(0, queries.shape[0], _QUERY_CHUNK):
    sim = queries[start:start + _QUERY_CHUNK] @ gallery.T
    correct = query_groups[start:start + _QUERY_CHUNK, None] == gallery_groups[None, :]
    best_correct = np.where(correct, sim, -np.inf).max(axis=1)
    wrong_ahead = np.sum(~correct & (sim >= best_correct[:, None]), axis=1)
    ranks[start:start + _QUERY_CHUNK] = wrong_ahead + 1
  return ranks


def _chance(num_correct: np.ndarray, num: int, k: int) -> float:
  # 1 - C(N-m, K)/C(N, K) = 1 - prod_{i<K} (N-m-i)/(N-i), computed as a product for stability.
  i = np.arange(min(k, num))
  ratio = np.clip((num - num_correct[:, None] - i[None]) / (num - i[None]), 0, None)
  return float(np.mean(1.0 - np.prod(ratio, axis=1)))


def recall_at_k(ecg_emb, text_emb, ks: Sequence[int] = (1, 5, 10), texts=None,
                group_ids: Optional[np.ndarray] = None) -> dict:
  """Recall@K both ways with duplicate-aware matching (see module docstring)."""
  ecg = _normalise(ecg_emb, "ecg_emb")
  text = _normalise(text_emb, "text_emb")
  if ecg.shape[0] != text.shape[0]:
    raise ValueError(f"recall_at_k: {ecg.shape[0]} ECG embeddings but {text.shape[0]} text "
                     "embeddings; rows must be paired")
  if ecg.shape[1] != text.shape[1]:
    raise ValueError(f"recall_at_k: embedding widths differ ({ecg.shape[1]} vs {text.shape[1]});"
                     " project both into the shared space first")
  if any(int(k) < 1 for k in ks):
    raise ValueError(f"recall_at_k: every K must be >= 1, got {list(ks)}")
  num = ecg.shape[0]
  groups = _groups(num, texts, group_ids)
  group_sizes = np.bincount(groups)[groups]
  out = {"num_queries": int(num)}
  for direction, queries, gallery in (("ecg_to_report", ecg, text),
                                      ("report_to_ecg", text, ecg)):
    ranks = _ranks(queries, gallery, groups, groups)
    for k in ks:
      out[f"{direction}/R@{k}"] = float(np.mean(ranks <= k))
      out[f"chance/{direction}/R@{k}"] = _chance(group_sizes, num, int(k))
    out[f"{direction}/median_rank"] = float(np.median(ranks))
  return out


class Evaluator(registry.EvaluatorBase):
  """ECG↔report Recall@K on one split (config: ks, split); nothing without a text tower."""

  def run(self, encoder) -> dict:
    if not encoder.has_text:
      return {}
    store, split = self.context.store, self.config.split
    data = store.split(split)
    has_report = np.array([bool(str(r).strip()) for r in data.report])
    if has_report.sum() < 2:
      return {"retrieval": {"error": f"fewer than 2 records with a report in {split}"}}
    ecg = store.features(encoder, split)["projected"][has_report]
    text = store.text_features(encoder, split)[has_report]
    ks = [k for k in tasks_lib.parse_list(self.config.ks, int) if k <= has_report.sum()]
    texts = [r for r, h in zip(data.report, has_report) if h]
    out = recall_at_k(ecg, text, ks=ks, texts=texts)
    out["split"] = split
    return {"retrieval": out}

  def scalars(self, results: dict) -> dict:
    """{"retrieval/<direction>/R@k": recall, ...} (chance levels and median ranks included)."""
    out = results.get("retrieval") or {}
    return {f"retrieval/{k}": float(v) for k, v in out.items()
            if isinstance(v, (int, float, np.floating, np.integer)) and k != "num_queries"}
