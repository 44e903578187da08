"""The same MAE train step in PyTorch, beside PyTorch's own measured matmul peak.

    pip install torch==2.13.0        # not a project requirement; the CPU build
    python -m benchmarks.torch_reference --sizes=base --batch_sizes=32 [--steps=5] [--json]
    python -m benchmarks.compare_frameworks --size=base --batch_size=32   # JAX and PyTorch, paired

The CPU fraction-of-peak targets were set against a PyTorch MAE step (ViT-B, patch 50, batch 32)
that reaches about 86 % of "this CPU's matmul peak". That peak is PyTorch's own matmul, and
`benchmarks/train_step.py` divides by XLA's. This script times the PyTorch step of the same
shapes beside its own measured matmul peak (PyTorch, same dtype, same process), so the two
frameworks can be compared both ways: fraction of each one's own peak, and step time. Compare
step times only from one run of `benchmarks/compare_frameworks.py`, which alternates this step
with the JAX one and prints the ratio per pair: the ratio differs from machine to machine.

The model mirrors `merit_jax` at λ = 0 (masked modelling only), with every shape read from the
harness's own config (`benchmarks/train_step.make_config`): patches of `rate // 2` samples from
10 s of 12 leads, 75 % of the tokens masked, the pre-LN ViT encoder of `--sizes` on the visible
tokens, the 256-wide, 4-layer, 4-head decoder on all tokens, the normalised-patch MSE on the
masked ones, AdamW with global-norm clipping. Attention is `F.scaled_dot_product_attention`
(PyTorch's fused CPU kernel), GELU exact, float32, eager mode. Model FLOPs are the harness's
`analytic_flops_per_step` of that config, so the FLOP/s figures are comparable. (JAX is imported
for the config and the count only; no JAX computation runs beside the PyTorch step.)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks import train_step as bench
from merit_jax.models import ecg_vit


def mae_config(size: str, rate: int, batch_size: int):
  """The harness's config of the MAE step (λ = 0, float32, remat off)."""
  if size not in ecg_vit.SIZES:
    raise ValueError(f"unknown size {size!r}; expected one of {sorted(ecg_vit.SIZES)}")
  return bench.make_config(size, rate, "mae", "masked", False, "float32", batch_size)


def shapes(size: str, rate: int) -> dict:
  """Token counts and widths of the harness's MAE step for one encoder size and sample rate."""
  config = mae_config(size, rate, 1)
  m = config.model
  tokens, visible = bench.token_counts(config)
  width, depth, mlp = bench.encoder_dims(config)
  return dict(leads=m.num_leads, samples=config.data.preprocess.num_samples,
              patch=m.patch_size, tokens=tokens, visible=visible, width=width, depth=depth,
              heads=bench.encoder_heads(config), mlp=mlp,
              decoder=(m.decoder.width, m.decoder.depth, m.decoder.heads))


def mae_flops_per_step(size: str, rate: int, batch_size: int) -> float:
  """Matmul + attention FLOPs of one MAE train step: the harness's own analytic count."""
  return bench.analytic_flops_per_step(mae_config(size, rate, batch_size))


def build_step(size: str, rate: int, batch_size: int, seed: int = 0):
  """(step() -> loss, model): one PyTorch MAE train step on a fixed random batch."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  torch.manual_seed(seed)
  s = shapes(size, rate)
  leads, patch, tokens, visible = s["leads"], s["patch"], s["tokens"], s["visible"]
  dw, d_depth, d_heads = s["decoder"]

  class Block(nn.Module):
    """Pre-LN block: x + Attn(LN(x)), x + MLP(LN(x)); no key bias, as merit_jax."""

    def __init__(self, width, heads, mlp):
      super().__init__()
      self.heads = heads
      self.ln1, self.ln2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
      self.q, self.k = nn.Linear(width, width), nn.Linear(width, width, bias=False)
      self.v, self.out = nn.Linear(width, width), nn.Linear(width, width)
      self.fc1, self.fc2 = nn.Linear(width, mlp), nn.Linear(mlp, width)

    def forward(self, x):
      b, t, w = x.shape
      h = self.ln1(x)
      split = lambda y: y.view(b, t, self.heads, w // self.heads).transpose(1, 2)  # noqa: E731
      a = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)))
      x = x + self.out(a.transpose(1, 2).reshape(b, t, w))
      return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

  class MAE(nn.Module):
    def __init__(self):
      super().__init__()
      w = s["width"]
      self.embed = nn.Linear(patch, w)
      self.lead = nn.Parameter(0.02 * torch.randn(leads, 1, w))
      self.time = nn.Parameter(0.02 * torch.randn(1, tokens // leads, w))
      self.encoder = nn.ModuleList(Block(w, s["heads"], s["mlp"]) for _ in range(s["depth"]))
      self.encoder_ln = nn.LayerNorm(w, eps=1e-6)
      self.decoder_in = nn.Linear(w, dw)
      self.mask_token = nn.Parameter(torch.zeros(1, 1, dw))
      self.decoder_pos = nn.Parameter(0.02 * torch.randn(1, tokens, dw))
      self.decoder = nn.ModuleList(Block(dw, d_heads, 4 * dw) for _ in range(d_depth))
      self.decoder_ln = nn.LayerNorm(dw, eps=1e-6)
      self.head = nn.Linear(dw, patch)

    def forward(self, ecg):
      b = ecg.shape[0]
      patches = ecg.reshape(b, tokens, patch)  # Lead-major, as ecg_vit.patchify.
      pos = (self.lead + self.time).reshape(1, tokens, -1)
      x = self.embed(patches) + pos
      order = torch.argsort(torch.rand(b, tokens), dim=1)
      restore = torch.argsort(order, dim=1)
      keep = order[:, :visible]
      x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
      for block in self.encoder:
        x = block(x)
      x = self.decoder_in(self.encoder_ln(x))
      x = torch.cat([x, self.mask_token.expand(b, tokens - visible, -1)], dim=1)
      x = torch.gather(x, 1, restore[..., None].expand(-1, -1, x.shape[-1])) + self.decoder_pos
      for block in self.decoder:
        x = block(x)
      pred = self.head(self.decoder_ln(x))
      target = (patches - patches.mean(-1, keepdim=True)) / (
          patches.var(-1, keepdim=True) + 1e-6).sqrt()
      masked = (restore >= visible).float()
      return (((pred - target) ** 2).mean(-1) * masked).sum() / masked.sum()

  model = MAE()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
  ecg = torch.randn(batch_size, leads, s["samples"])

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(ecg)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.detach().item()

  return step, model


def matmul_peak(extra_shapes=(), repeats: int = 5) -> float:
  """PyTorch's float32 matmul FLOP/s: best of `repeats` over large squares and `extra_shapes`."""
  import torch  # pylint: disable=import-outside-toplevel
  best = 0.0
  for m, k, n in [(1024, 1024, 1024), (2048, 2048, 2048), *extra_shapes]:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(2):
      torch.mm(a, b)
    for _ in range(repeats):
      start = time.perf_counter()
      torch.mm(a, b)
      best = max(best, 2.0 * m * k * n / (time.perf_counter() - start))
  return best


def bench_one(size: str, rate: int, batch_size: int, steps: int) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  s = shapes(size, rate)
  step, model = build_step(size, rate, batch_size)
  step_shapes = [(batch_size * s["visible"], s["width"], s["mlp"]),
                 (batch_size * s["visible"], s["mlp"], s["width"])]
  for _ in range(2):  # Warm-up: allocator, oneDNN primitive caches.
    loss = step()
  peak = matmul_peak(step_shapes)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - start)
  peak = max(peak, matmul_peak(step_shapes))  # Best of before and after the timed steps.
  step_time = float(np.median(times))
  flops = mae_flops_per_step(size, rate, batch_size)
  return dict(framework="pytorch", torch_version=torch.__version__,
              threads=torch.get_num_threads(), model=size, variant="mae", sample_rate=rate,
              dtype="float32", batch_size=batch_size, steps=steps,
              params=sum(p.numel() for p in model.parameters()),
              step_time_s=step_time, step_time_min_s=float(min(times)),
              ecgs_per_s=batch_size / step_time, flops_per_step=flops,
              achieved_flops_per_s=flops / step_time, peak_flops_per_s=peak,
              fraction_of_peak=flops / step_time / peak, loss_finite=bool(np.isfinite(loss)),
              load_average_1m=os.getloadavg()[0])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="base")
  parser.add_argument("--rates", default="100")
  parser.add_argument("--batch_sizes", default="32")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise SystemExit("benchmarks.torch_reference needs PyTorch, which merit_jax does not "
                     "install: pip install torch==2.13.0") from e
  if args.steps < 1:
    raise SystemExit(f"--steps must be at least 1, got {args.steps}")
  rates = [int(r) for r in args.rates.split(",")]
  for size in args.sizes.split(","):
    for rate in rates:
      try:
        shapes(size, rate)
      except ValueError as e:
        raise SystemExit(f"--sizes: {e}") from e
  records = []
  for size in args.sizes.split(","):
    for rate in rates:
      for batch in (int(b) for b in args.batch_sizes.split(",")):
        record = bench_one(size, rate, batch, args.steps)
        records.append(record)
        if not args.json:
          print(f"pytorch {size} mae {rate} Hz batch {batch}: step {record['step_time_s']:.3f} s"
                f", {record['ecgs_per_s']:.1f} ECGs/s, "
                f"{record['achieved_flops_per_s'] / 1e9:.0f} GFLOP/s of a "
                f"{record['peak_flops_per_s'] / 1e9:.0f} GFLOP/s PyTorch matmul peak: "
                f"{100 * record['fraction_of_peak']:.1f} %", flush=True)
  if args.json:
    print(json.dumps(records, indent=1))


if __name__ == "__main__":
  main()
