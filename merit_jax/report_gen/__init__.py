"""ECG-conditioned report generation: frozen ECG encoder → trainable projector → frozen LLM.

`python -m merit_jax.generate` runs it; the pieces live here, one job per module:

  data        ECG features of a split (through `merit_jax.encoder.Encoder`), the training
              token sequences, and the ECGs of predict mode
  projector   the LLM, the `Generator` (projector + LoRA adapters, the report-only loss) and
              the Orbax save / load of a trained projector
  training    the jitted train step and the loop over precomputed features
  decoding    one report per ECG (greedy / beam / nucleus) and its scores
  reporting   the comparison table (markdown + JSON, bootstrap CIs), samples and predictions
  recipe_table  validation runs side by side, and the recipe the selection rule picks
  baselines   the most-frequent-report arm
  neighbours, reranking  statements of the nearest training ECGs: feature hints, reranking
  statement_hints  a linear classifier's statements, written into each record's prompt
  statement_phrases  those statements written as the report's start
  hint_settings  the classifier's settings chosen on validation, no LLM trained
  samples     the samples page (fixed records side by side, statement confusion counts)
"""


class GenerateError(ValueError):
  """A problem with the user's config or inputs, reported as one clear line."""
