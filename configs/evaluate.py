"""Evaluation config for `python -m merit_jax.evaluate` (and the evaluation of merit_jax.ablations).

Usage:
  python -m merit_jax.evaluate --config=configs/evaluate.py --config.checkpoint=RUN_DIR \
      [--config.output_dir=DIR] [--config.baselines=random_init,random_conv] \
      [--config.evaluators=linear_probe,zero_shot,retrieval,shift,transfer,finetune] \
      [--config.tasks=superdiagnostic,subdiagnostic,form,rhythm,all,diagnostic] \
      [--config.merl_splits=True]

Variants (after the colon, `VARIANTS`): `full` (default) = the full protocol; `quick` = fewer
seeds, bootstrap resamples and corruptions, for CPU smoke runs.

Each evaluator is a section `config.evals.<name> = {type, every, ...}` (`type`: the module under
merit_jax/evaluators/); `config.evaluators` names the sections to run, in order. The options
shared by several evaluators (tasks, fractions, seeds, n_bootstrap, seed, the probe's
hyperparameters) are set once at the top level and referenced by the sections, and each section
is also reachable at the top level (`--config.zero_shot.prompt_file=...` is
`config.evals.zero_shot.prompt_file`).

Lists are tuples; on the command line a comma list works too (`--config.tasks=super,rhythm`).
Every choice (probe epochs and weight decay, fine-tuning epochs and learning rate, F1
thresholds, zero-shot prompts) is made on the validation split; the test split is scored once.
"""

import pathlib

import ml_collections
from ml_collections import config_dict

# configs/prompts, found from this file so that the config loads from any directory.
PROMPT_DIR = str(pathlib.Path(__file__).resolve().parent / "prompts")


def _quick(config: ml_collections.ConfigDict) -> None:
  config.seeds = (0, 1)
  config.n_bootstrap = 200
  config.probe.max_epochs = 200
  config.shift.corruptions = ("gaussian_noise", "baseline_wander", "lead_dropout")
  config.random_conv.num_kernels = 200


# Variant -> what it changes in the full protocol.
VARIANTS = {"full": lambda config: None, "quick": _quick}


def _evals(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The evaluator sections; shared options are references to the top-level keys."""
  ref = config.get_ref
  evals = ml_collections.ConfigDict()
  # Frozen pooled (and per-lead) features at each label fraction (seeds below 100 %).
  evals.linear_probe = ml_collections.ConfigDict(dict(
      type="linear_probe", every=0, tasks=ref("tasks"), fractions=ref("fractions"),
      seeds=ref("seeds"), n_bootstrap=ref("n_bootstrap"), probe=config.probe))
  # Encoder + linear head; MERIT encoders only.
  evals.finetune = ml_collections.ConfigDict(dict(
      type="finetune_eval", every=0, tasks=ref("tasks"), learning_rates=(1e-4, 1e-3),
      max_epochs=10, patience=3, batch_size=32, weight_decay=1e-4, fractions=(1.0,),
      seeds=(0,), n_bootstrap=ref("n_bootstrap"), progress=ref("progress")))
  # Per task, the (prompt set, normalisation) with the best validation macro AUROC, scored
  # once on test (all validation numbers go into the JSON and a table of the markdown).
  # prompt_sets: scp_en ("an ECG showing {SCP description}" templates), report_de
  # (prompts/ptbxl_reports.yaml: report-style German/English device statements), knowledge
  # (prompts/ptbxl_knowledge.yaml: CKEPE-style clinical descriptions of every SCP statement and
  # PTB-XL group), all (their union, ensembled). A class a prompt file does not name keeps the
  # templates.
  # normalizations (per record, over the task's classes): raw (cosine), centered (minus the
  # record's mean over the class prompts), softmax (cosine × the model's logit scale, or × 100
  # when the encoder has none).
  # prompt_file: your own JSON/YAML {class: [prompts]}, extending (user_prompts=extend) or
  # replacing (replace) the templates; when set it joins the candidates as the prompt set
  # `user` (prompt_sets=user to use only it; --eval_config.zero_shot... in merit_jax.ablations).
  # prototype / text_ceiling: the two diagnostics reported in their own sections: class
  # embeddings = the mean text embedding of the training reports of a class (uses labels: NOT
  # zero-shot), and the test reports themselves scored against the chosen prompts (no ECG).
  evals.zero_shot = ml_collections.ConfigDict(dict(
      type="zero_shot", every=0, tasks=ref("tasks"),
      statements_csv=config_dict.placeholder(str),  # default <data.manual_dir>/scp_statements.csv
      prompt_sets=("scp_en", "report_de", "knowledge", "all"),  # + user when prompt_file is set
      normalizations=("raw", "centered", "softmax"),
      prompt_file=config_dict.placeholder(str),     # JSON/YAML {class: [prompts]}, see above
      user_prompts="extend",                        # or "replace"
      prompt_dir=PROMPT_DIR,                        # the files of report_de and knowledge
      prototype=True, text_ceiling=True, n_bootstrap=ref("n_bootstrap"), seed=ref("seed")))
  # ECG->report and report->ECG Recall@K on the records of `split` that have a report.
  evals.retrieval = ml_collections.ConfigDict(dict(
      type="retrieval", every=0, ks=(1, 5, 10), split="test"))
  # Degradation curves of the fixed 100 % probe on corrupted test signals.
  # reduced_leads_mode: "native" feeds MERIT encoders only the kept leads
  # (`Encoder.embed_ecg(ecg, leads=...)`, what a reduced-lead recording gives them) and
  # zero-fills the missing leads only for encoders without a lead-subset input (random_conv);
  # "zeros" zero-fills for every encoder. The mode used per encoder is in the results JSON.
  evals.shift = ml_collections.ConfigDict(dict(
      type="shift", every=0, tasks=("superdiagnostic",),
      corruptions=("gaussian_noise", "baseline_wander", "mains_50hz", "electrode_motion",
                   "amplitude_scaling", "lead_dropout", "reduced_leads", "time_shift_pad"),
      reduced_leads_mode="native", seed=0, probe=config.probe,
      n_bootstrap=ref("n_bootstrap")))
  # Cross-dataset transfer (merit_jax/evaluators/transfer.py): built TFDS datasets as
  # name/config[:task]; build them with `python -m merit_jax.data.build physionet2021
  # --config=cpsc2018 --manual_dir=<Challenge 2021 training/> --data_dir=DIR --no_tokenizer`.
  # Targets that are not built are skipped (with the command printed), so it costs nothing
  # where CPSC2018 / CSN are absent.
  evals.transfer = ml_collections.ConfigDict(dict(
      type="transfer", every=0, targets=("physionet2021/cpsc2018", "physionet2021/csn"),
      data_dir=config_dict.placeholder(str),  # default: the evaluation data's data_dir
      source_task="all",                      # PTB-XL task whose labels are SCP codes
      min_positives=10,                       # per shared class, in PTB-XL train and val
      probe=config.probe, n_bootstrap=ref("n_bootstrap"), seed=ref("seed")))
  return evals


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = (arg or "full").strip()
  if variant not in VARIANTS:
    raise ValueError(f"configs/evaluate.py: unknown variant {variant!r}; choose from "
                     f"{', '.join(VARIANTS)}")
  config = ml_collections.ConfigDict()
  config.checkpoint = config_dict.placeholder(str)  # a training run's --workdir
  config.step = config_dict.placeholder(int)        # default: its latest checkpoint
  config.output_dir = config_dict.placeholder(str)  # default: <checkpoint>/eval
  config.results_dir = config_dict.placeholder(str)  # default: <output_dir>/results
  config.name = "evaluation"                        # <results_dir>/<name>.{md,json,png}
  # The sections of config.evals to run, in this order (+ finetune).
  config.evaluators = ("linear_probe", "zero_shot", "retrieval", "shift", "transfer")
  # random_init, random_conv, random_conv@K: random_conv@K uses K kernels per lead (2 x 12 x K
  # features), e.g. random_conv@32 matches the 768 per_lead features of a 64-wide encoder.
  config.baselines = ()
  # PTB-XL tasks (full or short names: super, sub, diag, form, rhythm, all). `all` (71 SCP
  # statements) and `diagnostic` (44) are the paper's headline tasks beside MERL's four. With
  # merl_splits=True they are skipped (MERL publishes no split files for them).
  config.tasks = ("superdiagnostic", "subdiagnostic", "form", "rhythm", "all", "diagnostic")
  config.fractions = (0.01, 0.1, 1.0)
  config.seeds = (0, 1, 2)                          # used at fractions < 1
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

  # The linear probe's hyperparameters (also the probes of shift and transfer).
  # features: the feature kinds the probe may use, chosen per task and label fraction on
  # validation: `pooled` (the encoder's mean token, width D) and, for MERIT encoders,
  # `per_lead` (each lead's mean token side by side, 12 x D: a feature count nearer random
  # convolutions') and `per_layer` (the per-lead means of every encoder block, depth x 12 x D:
  # 2,304 for a 3-layer, 64-wide encoder, matching 2,400 random-conv features; offered up to
  # encoder.MAX_WIDE_FEATURES). Encoders also provide `per_lead_max` (each lead's mean and max
  # token, 12 x 2D; up to the same width), which the default leaves out: offered beside the
  # three, it lifted the validation-chosen cells of the random-init and masked-only encoders
  # more than MERIT's (results/probe_per_lead_max_validation.md), and adding it would change
  # what the commands in results/ produce. Name it here to offer it. Random convolutions only
  # have `pooled`.
  # solver: `adam` (early stopping on validation; learning_rate, max_epochs, eval_every,
  # patience) or `lbfgs` (each weight decay fitted to its optimum; max_iters, tol; weight
  # decays > 0). Validation chooses the largest weight decay, 0.1, in 59-76 % of each
  # encoder's probe runs of the ptbxl_shared_all grid (the edge table of each results page).
  # L-BFGS with weight decays up to 100 moved the choice off that edge but scored 2.6 points
  # lower by the grid's rule on validation (MERIT λ = 3, seed 0:
  # results/probe_solver_validation.md): early stopping regularises the few-label probes
  # better than an exact fit does, so Adam stays the default.
  # weight_decays: 0 ... 10 (9 values) rather than 0 ... 0.1 (5), chosen on validation by
  # cross-fitting (merit_jax.probe_grid_crossfit: choose on one half of the validation
  # records, score on the other, both ways): over the 8 encoders of the ptbxl_shared_all grid
  # (MERIT lambda = 3, contrastive only, masked only, 2 seeds; random init and random conv),
  # 5 tasks and 3 label fractions, the wider grid's held-out macro AUROC is 0.49 points
  # higher (+0.69 / +0.36 / +0.41 at 1 / 10 / 100 % labels; results/probe_grid_crossfit.md).
  # Result pages written before that choice used 0 ... 0.1 (results/README.md).
  config.probe = ml_collections.ConfigDict(dict(
      solver="adam", weight_decays=(0.0, 1e-4, 1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0, 10.0),
      learning_rate=1e-2,
      max_epochs=300, eval_every=10, patience=5, max_iters=500, tol=1e-4,
      features=("pooled", "per_lead", "per_layer")))
  config.random_conv = ml_collections.ConfigDict(dict(num_kernels=500, seed=0))
  config.random_init = ml_collections.ConfigDict(dict(seed=0))

  config.evals = _evals(config)
  # The sections under their short names, the form of the commands in results/.
  for name in ("finetune", "zero_shot", "retrieval", "shift", "transfer"):
    config[name] = config.evals[name]

  VARIANTS[variant](config)
  return config
