"""Evaluation config for `python -m merit_jax.evaluate`.

Usage:
  python -m merit_jax.evaluate --config=configs/evaluate.py --config.checkpoint=RUN_DIR \
      [--config.output_dir=DIR] [--config.baselines=random_init,random_conv] \
      [--config.evaluators=linear_probe,zero_shot,retrieval,shift,transfer,finetune] \
      [--config.tasks=superdiagnostic,subdiagnostic,form,rhythm,all,diagnostic] \
      [--config.merl_splits=True]

Variants (after the colon): (none) = the full protocol; `quick` = fewer seeds, bootstrap
resamples and corruptions, for CPU smoke runs.

List-valued options are comma-separated strings so they can be set from the command line.
Every choice (probe epochs and weight decay, fine-tuning epochs and learning rate, F1
thresholds) is made on the validation split; the test split is scored once.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = (arg or "full").strip()
  if variant not in ("full", "quick"):
    raise ValueError(f"configs/evaluate.py: unknown variant {variant!r}; use full or quick")
  config = ml_collections.ConfigDict()
  config.checkpoint = config_dict.placeholder(str)  # a training run's --workdir
  config.step = config_dict.placeholder(int)        # default: its latest checkpoint
  config.output_dir = config_dict.placeholder(str)  # default: <checkpoint>/eval
  config.results_dir = config_dict.placeholder(str)  # default: <output_dir>/results
  config.name = "evaluation"                        # <results_dir>/<name>.{md,json,png}
  # transfer skips (with a printed reason) every target that is not built, so it costs
  # nothing where CPSC2018 / CSN are absent.
  config.evaluators = "linear_probe,zero_shot,retrieval,shift,transfer"  # + finetune
  config.baselines = ""                             # random_init,random_conv
  # PTB-XL tasks (full or short names: super, sub, diag, form, rhythm, all).
  config.tasks = "superdiagnostic,subdiagnostic,form,rhythm"
  config.fractions = "0.01,0.1,1.0"
  config.seeds = "0,1,2"                            # used at fractions < 1
  config.n_bootstrap = 1000
  config.batch_size = 64
  config.max_records = config_dict.placeholder(int)  # per split and source; None = all
  config.progress = True
  config.seed = 0

  # Which data: the checkpoint's own (all sources of a mixture) unless overridden.
  config.data = ml_collections.ConfigDict()
  config.data.name = config_dict.placeholder(str)
  config.data.config = config_dict.placeholder(str)
  config.data.data_dir = config_dict.placeholder(str)
  config.data.all_sources = True
  # MERL's published split files (labels_merl/ptbxl_<task>_{train,val,test}.csv) instead of
  # the TFDS folds and labels; default folder: <data.manual_dir>/labels_merl.
  config.merl_splits = False
  config.merl_dir = config_dict.placeholder(str)

  config.probe = ml_collections.ConfigDict(dict(
      weight_decays="0,1e-4,1e-3,1e-2,1e-1", learning_rate=1e-2, max_epochs=300,
      eval_every=10, patience=5))
  config.finetune = ml_collections.ConfigDict(dict(
      learning_rates="1e-4,1e-3", max_epochs=10, patience=3, batch_size=32,
      weight_decay=1e-4, fractions="1.0", seeds="0"))
  # prompt_file: JSON/YAML {class: [prompts]}, extending (user_prompts=extend) or replacing
  # (replace) the "an ECG showing {SCP description}" templates. The templates are English, the
  # PTB-XL reports the text tower learns from mostly German device statements, so
  # configs/prompts/ptbxl_reports.yaml gives report-style prompts for every class of the four
  # PTB-XL tasks: --config.zero_shot.prompt_file=configs/prompts/ptbxl_reports.yaml
  # --config.zero_shot.user_prompts=replace (--eval_config.zero_shot... in merit_jax.ablations).
  # Choose between prompt sets by zero_shot val_macro_auroc in the results JSON, never by test.
  config.zero_shot = ml_collections.ConfigDict(dict(
      statements_csv=config_dict.placeholder(str),   # default <data.manual_dir>/scp_statements.csv
      prompt_file=config_dict.placeholder(str),      # JSON/YAML {class: [prompts]}, see above
      user_prompts="extend"))                        # or "replace"
  config.retrieval = ml_collections.ConfigDict(dict(ks="1,5,10", split="test"))
  # reduced_leads_mode: "native" feeds MERIT encoders only the kept leads
  # (`MERIT.embed_ecg(ecg, leads=...)`, what a reduced-lead recording gives them) and zero-fills
  # the missing leads only for encoders without a lead-subset input (random_conv); "zeros"
  # zero-fills for every encoder. The mode used per encoder is in the results JSON.
  config.shift = ml_collections.ConfigDict(dict(
      tasks="superdiagnostic",
      corruptions="gaussian_noise,baseline_wander,mains_50hz,electrode_motion,"
                  "amplitude_scaling,lead_dropout,reduced_leads,time_shift_pad",
      reduced_leads_mode="native",
      seed=0))
  # Cross-dataset transfer (merit_jax/evaluators/transfer.py): built TFDS datasets as
  # name/config[:task]; build them with `python -m merit_jax.data.build physionet2021
  # --config=cpsc2018 --manual_dir=<Challenge 2021 training/> --data_dir=DIR --no_tokenizer`.
  config.transfer = ml_collections.ConfigDict(dict(
      targets="physionet2021/cpsc2018,physionet2021/csn",
      data_dir=config_dict.placeholder(str),  # default: the evaluation data's data_dir
      source_task="all",                      # PTB-XL task whose labels are SCP codes
      min_positives=10))                      # per shared class, in PTB-XL train and val
  config.random_conv = ml_collections.ConfigDict(dict(num_kernels=500, seed=0))
  config.random_init = ml_collections.ConfigDict(dict(seed=0))

  if variant == "quick":
    config.seeds = "0,1"
    config.n_bootstrap = 200
    config.probe.max_epochs = 200
    config.shift.corruptions = "gaussian_noise,baseline_wander,lead_dropout"
    config.random_conv.num_kernels = 200
  return config
