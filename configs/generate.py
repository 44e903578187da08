"""Config for ECG-conditioned report generation (`python -m merit_jax.generate`).

  # Train a projector (frozen MERIT encoder → soft prefix → frozen Gemma 3 270M):
  python -m merit_jax.generate --config=configs/generate.py --config.checkpoint=RUN_DIR \
      --workdir=DIR
  # Score a trained projector on a split with other decoding settings (choices on validation):
  python -m merit_jax.generate --config=configs/generate.py --config.mode=score \
      --config.projector=DIR --config.eval.split=validation --config.decoding.beam_width=4 \
      --config.decoding.method=beam --workdir=OUT
  # Reports for a folder of ECGs (WFDB records or .npy files) into a CSV:
  python -m merit_jax.generate --config=configs/generate.py --config.mode=predict \
      --config.projector=DIR --config.input=FOLDER --config.output=reports.csv
  # The comparison table (no ECG / random encoder / MERIT encoder / most frequent report):
  python -m merit_jax.generate --config=configs/generate.py:compare \
      --config.merit_checkpoint=RUN_DIR --workdir=DIR

Variants (after the colon, `VARIANTS` below): (none) the defaults; `compare` the four-arm table
with the recipe chosen on validation, at a CPU budget; `quick` a short single-arm run; `test` the tiny random LLM (byte
tokenizer) used by the unit tests.

checkpoint: a MERIT run dir, None (no ECG: the projector sees zero features, i.e. it learns a
constant soft prompt under the same training), or 'random' (a randomly initialised encoder of
the config of `encoder_like`, a MERIT run dir).
"""

import os

import ml_collections
from ml_collections import config_dict

# The real PTB-XL files live beside the checkout (`../shared/data` from the repository root);
# resolved from this file, not the current directory, so a run can start anywhere.
SHARED_DATA = os.environ.get("MERIT_SHARED_DATA") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))

# Overrides of each variant over the defaults, as dotted key -> value.
VARIANTS = {
    "default": {},
    # The recipe chosen on the validation fold (results/report_generation_validation_recipes.md:
    # the highest mean of validation statement F1 micro and macro) at a CPU budget: a
    # forward+backward of the 270M LLM over 8 × ~80 tokens takes ~5.5 s on 2 cores, so 240
    # steps ≈ 22 min an arm. LoRA on attention + MLP with the projector, features
    # standardised on the training split. Rank 4 over 8 by the same rule
    # (results/report_generation_validation_lora_rank.md: F1 micro / macro 47.2 / 9.6 against
    # 46.5 / 9.3 and, for a second training seed, 45.3 / 8.7 at rank 8).
    "compare": {
        "mode": "compare",
        "lora_rank": 4,
        "standardize_features": True,
        "total_steps": 240,
        "optim.warmup_steps": 20,
        "log_every": 20,
        # Rules against degenerate reports; the repetition penalty (1.0 / 1.1 / 1.2) chosen on
        # validation, the others fixed.
        "decoding.repetition_penalty": 1.2,
        "decoding.no_repeat_ngram": 4,
        "decoding.min_new_tokens": 4,
        "decoding.ban_markup": True,
        # The length limit, chosen on validation among 12 / 16 / 24 / 32 / 64 (beam search
        # lost to greedy there).
        "decoding.max_new_tokens": 24,
        # Statement hints in the prompt, and written as the report's start with no tokens
        # after them (results/report_generation_validation_written_hints.md: statement F1
        # micro / macro 51.5 / 15.1 against 51.2 / 15.0 with 8 tokens after the hints, 50.1 /
        # 14.7 with 24, and 46.2 / 8.5 with the hints in the prompt only).
        "statement_hints.enabled": True,
        "decoding.write_hints": True,
        "decoding.tokens_after_hints": 0,
        # The hint classifier's settings, chosen afterwards on validation by the same rule
        # (results/report_generation_validation_hint_settings.md: hint F1 micro / macro 55.3 /
        # 13.6 against 51.5 / 15.1 at min_f1 0.3, l2 1). Not yet scored on the test fold.
        "statement_hints.min_f1": 0.4,
        "statement_hints.l2": 10.0,
    },
    "quick": {
        "total_steps": 40,
        "optim.warmup_steps": 5,
        "eval.max_records": 32,
    },
    "test": {
        "llm": "tiny",
        "num_prefix_tokens": 2,
        "projector_hidden": 32,
        "resampler": dict(width=16, depth=1, num_heads=2),
        "max_report_tokens": 24,
        "prompt": "ECG:",
        "total_steps": 4,
        "batch_size": 8,
        "log_every": 2,
        "optim.warmup_steps": 1,
        "feature_batch_size": 8,
        "eval.batch_size": 8,
        "eval.max_records": 8,
        "eval.num_examples": 2,
        "eval.meteor": False,
        "eval.n_bootstrap": 100,
        "progress": False,
    },
}


def _defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "train"  # 'train' | 'predict' | 'score' (a trained projector, other decoding) | 'compare'
  c.seed = 0

  # --- ECG side ------------------------------------------------------------------------------
  c.checkpoint = config_dict.placeholder(str)  # MERIT run dir | None (no ECG) | 'random'
  c.encoder_like = config_dict.placeholder(str)  # run dir whose encoder config 'random' copies
  c.merit_checkpoint = config_dict.placeholder(str)  # compare mode: the MERIT arm's run dir
  # Compare mode, run one after the other; 'most_frequent' writes the training split's most
  # common report for every record (no ECG, no training: the floor a model must beat).
  c.arms = ("none", "random", "merit", "most_frequent")
  # compare mode: a finished compare workdir whose arms are re-scored (this config's decoding
  # and eval split) instead of trained again; its recipe must be the one this config states.
  c.rescore_from = config_dict.placeholder(str)

  # --- LLM and conditioning -------------------------------------------------------------------
  c.llm = "gemma3_270m"  # 'gemma3_270m' (the packaged GGUF) | 'tiny' (random, byte tokenizer)
  c.llm_path = config_dict.placeholder(str)  # another Gemma 3 GGUF file
  # Standardise each feature channel on the training split before the projector (the stats
  # are saved with it); without it a trained encoder's shared feature component dominates.
  c.standardize_features = False
  # k > 0: append to each record's features the share of its k nearest training ECGs whose
  # report names each SCP statement (report_gen/neighbours.py); 0 = off.
  c.neighbour_statements = 0
  # Statements a linear classifier on the training features predicts for a record, written
  # into its prompt ("Statements: SR NORM.\n" + prompt; report_gen/statement_hints.py): one
  # logistic regression (L2 strength l2) per statement with min_positives training positives,
  # thresholds and the training records' own hints out-of-fold (`folds`), statements whose
  # out-of-fold F1 is below min_f1 never hinted. train_on: the training records' hints are
  # 'out_of_fold' predictions or their own 'labels' (among the hinted statements). Pooled
  # features only.
  c.statement_hints = ml_collections.ConfigDict(dict(
      enabled=False, folds=5, min_positives=5, min_f1=0.3, l2=1.0, train_on="out_of_fold"))
  c.projector_kind = "mlp"  # 'mlp' on pooled features | 'resampler' over encoder tokens
  c.projector_hidden = 1024
  c.resampler = ml_collections.ConfigDict(dict(width=256, depth=2, num_heads=4))
  c.num_prefix_tokens = 8
  c.lora_rank = 0  # 0 = frozen LLM
  # What the adapters adapt (with lora_rank > 0): 'attn' (q/k/v/o projections) and/or 'mlp'
  # (the GeGLU gate/up/down projections) of every block.
  c.lora_targets = ("attn", "mlp")
  c.lora_alpha = 16.0
  c.prompt = "12-lead ECG report:"
  c.max_report_tokens = 64

  # --- training -------------------------------------------------------------------------------
  c.total_steps = 300
  c.batch_size = 8
  c.log_every = 10
  c.optim = ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_steps=20, weight_decay=0.01, b1=0.9, b2=0.99, grad_clip=1.0,
      min_lr_ratio=0.0))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.train_split = "train"
  c.feature_batch_size = 64  # ECGs per encoder forward when precomputing features

  # --- decoding and evaluation ----------------------------------------------------------------
  c.decoding = ml_collections.ConfigDict(dict(
      method="greedy", beam_width=4, length_penalty=0.0, top_p=0.9, temperature=1.0,
      # Rules against empty, markup and looping reports (`models/llm/decode.py`); 1.0 / 0 /
      # False = off. stop_at_end_of_turn: Gemma's <end_of_turn> ends a report like EOS.
      repetition_penalty=1.0, no_repeat_ngram=0, min_new_tokens=0, ban_markup=False,
      stop_at_end_of_turn=True,
      # The longest report decoded, in tokens; None = max_report_tokens (the training
      # truncation). A decoding setting, so score mode can choose it on validation.
      max_new_tokens=config_dict.placeholder(int),
      # The report starts with the phrases of its hinted statements (statement_hints; phrases
      # as the training reports write them, report_gen/statement_phrases.py), written for the
      # LLM, which continues from there for at most tokens_after_hints tokens (None =
      # max_new_tokens; 0 = the phrases are the report). A record with no hint is decoded as
      # usual. Needs statement_hints.enabled.
      write_hints=False, tokens_after_hints=config_dict.placeholder(int),
      # Choice among several decodes (report_gen/reranking.py): rerank_samples nucleus samples
      # (temperature, top_p above) besides the `method` decode; the candidate whose statements
      # agree best with the reports of the rerank_neighbours nearest training ECGs is kept.
      # 0 = off (one decode).
      rerank_samples=0, rerank_neighbours=40))
  c.eval = ml_collections.ConfigDict(dict(
      split="test", batch_size=16, max_records=config_dict.placeholder(int), num_examples=5,
      meteor=True,
      # Compare mode: bootstrap resamples of the test records for the table's 95 % CIs and
      # paired differences (cheap: each record is scored once, resamples re-sum statistics).
      n_bootstrap=1000))

  # --- data: both shared PTB-XL folders, each its own build (made on first use from its
  # manual_dir), as configs/pretrain.py:ptbxl_shared reads them ----------------------------------
  c.data = ml_collections.ConfigDict()
  # data.name/data_dir: the first folder; its label names, and the only dataset read with
  # --config.data.sources=None.
  c.data.name = "ptbxl"
  c.data.config = "100hz"
  c.data.data_dir = "~/tensorflow_datasets/merit_shared/ptbxl"
  c.data.manual_dir = os.path.join(SHARED_DATA, "ptbxl")
  c.data.build_kwargs = ml_collections.ConfigDict()  # extra arguments of the dataset build
  # Every report-bearing record of a split of both folders (raw and upstream-normalised
  # records), concatenated: 541 + 571 = 1,112 training reports. Weights are unused here (each
  # record is read once); they keep the entries in pretrain.py's data.sources form.
  c.data.sources = config_dict.FieldReference(tuple(
      dict(name="ptbxl", config="100hz", weight=1.0, reports=True,
           data_dir=f"~/tensorflow_datasets/merit_shared/{folder}",
           manual_dir=os.path.join(SHARED_DATA, folder))
      for folder in ("ptbxl", "ptbxl_derived")), field_type=tuple)
  c.data.num_threads = 0  # Grain read threads (0 = min(8, cores))
  c.data.preprocess = ml_collections.ConfigDict(dict(
      sample_rate=100, num_samples=1000, bandpass=config_dict.placeholder(tuple),
      normalize="zscore"))

  # --- predict and score modes ----------------------------------------------------------------
  c.projector = config_dict.placeholder(str)  # a training workdir (holds projector/)
  c.input = config_dict.placeholder(str)  # folder of WFDB records or .npy files, or one .npy
  c.output = config_dict.placeholder(str)  # CSV path
  c.sample_rate = config_dict.placeholder(float)  # rate of .npy inputs (default: the model's)

  # --- compare mode ---------------------------------------------------------------------------
  # Another eval.split than test adds `_<split>` to both pages' names (the test pages stay).
  c.results_path = "results/report_generation.md"  # also written: <workdir>/report_generation.*
  # 12 test records side by side + MERIT's statement confusion (report_gen/samples.py); also
  # written: <workdir>/report_generation_samples.md. None: the workdir copy only.
  c.samples_path = "results/report_generation_samples.md"
  c.progress = True
  return c


def _override(c: ml_collections.ConfigDict, dotted: str, value) -> None:
  """Sets one dotted key of a VARIANTS entry in `c` (a dict value becomes a ConfigDict)."""
  # configs/pretrain.apply_overrides walks keys the same way; it is not imported because a
  # config file is loaded by its path and must not depend on the import path of another.
  *parents, key = dotted.split(".")
  node = c
  for part in parents:
    node = node[part]
  if key not in node:  # An override may only change a key the defaults define.
    raise KeyError(f"configs/generate.py: a variant overrides unknown key {dotted!r}")
  node[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"configs/generate.py: unknown variant {variant!r}; choose from "
                     f"{', '.join(VARIANTS)} (e.g. --config=configs/generate.py:compare)")
  c = _defaults()
  for dotted, value in VARIANTS[variant].items():
    _override(c, dotted, value)
  return c
