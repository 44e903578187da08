"""Where a train step's time goes on the CPU: per-op trace time by kind of op and by model path.

    python -m benchmarks.op_profile --size=base --variant=mae --batch_size=32
    python -m benchmarks.op_profile --size=small --variant=merit --top=40 --trace_dir=DIR

Builds the benchmark's step (benchmarks/train_step.py: same config, random inputs), compiles
it, runs a few warm-up steps, then traces `--steps` steps with `jax.profiler` and matches every
traced op (XLA:CPU names each executed thunk after its HLO instruction) to the compiled HLO.

It prints the traced time per step
- by kind: `matmul` (a fusion or library call around a dot/convolution), `elementwise`,
  `reduce`, `copy/transpose`, `other`;
- by model path (the op's `op_name` metadata with block indices folded, so the twelve blocks
  add up) and whether the op is in the forward or backward pass.

Ops that XLA runs side by side on different threads are each counted with their own duration,
so the traced total can exceed the wall-clock step time; the share of each kind is the useful
figure. The reverse happens too: an op that XLA:CPU runs asynchronously (a plain `dot` handed to
Eigen's thread pool, e.g. the MLP weight gradients) is traced only while it is launched, and its
work shows up as time inside the step when no traced op runs. `coverage` measures both within
the runtime's per-step execution window and the tool prints them, so neither is silently lost.
This is a diagnosis tool for XLA:CPU traces; on an accelerator use the profiler's own viewer
(TensorBoard / Perfetto). The default XLA flags (merit_jax/xla_defaults.py) are applied
as in the trainer unless `--no_xla_defaults`.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

from merit_jax import xla_defaults

_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (.*)")
# A computation: a header line ending in '{', its body, a line '}'. The header must not span
# lines, or the module's first line would swallow the first computation.
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", re.S | re.M)


def parse_hlo(hlo_text: str) -> tuple[dict[str, str], dict[str, str]]:
  """(instruction name -> its text after '=', computation name -> its body)."""
  instructions = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if m:
      instructions[m.group(1)] = m.group(2)
  computations = {m.group(1): m.group(2) for m in _COMPUTATION.finditer(hlo_text)}
  return instructions, computations


def op_kind(text: str, computations: dict[str, str]) -> str:
  """Kind of one HLO instruction (text after '='), looking inside fusions."""
  called = re.search(r"calls=%([\w.\-]+)", text)
  body = computations.get(called.group(1), "") if called else ""
  head = text.split(", metadata=")[0]
  ops = set(re.findall(r"\s([a-z][a-z\-]*)\(", " " + (body or head)))
  if ops & {"dot", "convolution"}:
    return "matmul"
  if "custom-call" in ops and re.search(r"matmul|gemm|dot", text, re.I):
    return "matmul"
  if ops & {"reduce", "reduce-window"}:
    return "reduce"
  if ops and ops <= {"copy", "transpose", "bitcast", "parameter", "reshape"}:
    return "copy/transpose"
  if ops - {"parameter", "constant", "bitcast", "tuple", "get-tuple-element"}:
    return "elementwise"
  return "other"


def model_path(text: str) -> tuple[str, str]:
  """(model path with block indices folded, 'fwd' | 'bwd' | '-') from the op_name metadata.

  '-' is an op outside the differentiated loss, e.g. the optimizer update.
  """
  m = re.search(r'op_name="([^"]*)"', text)
  name = m.group(1) if m else ""
  direction = "bwd" if "transpose(" in name else ("fwd" if "jvp(" in name else "-")
  parts = [p for p in name.split("/")
           if p and not p.startswith(("jit(", "jvp(", "transpose(", "vmap("))]
  path = re.sub(r"block\d+", "block*", "/".join(parts))
  return path or "(no metadata)", direction


def _traced_ops(trace_events, instructions):
  """(event, HLO text) of every complete trace event that is one of the step's ops."""
  for event in trace_events:
    if event.get("ph") != "X" or event.get("name") not in instructions:
      continue
    text = instructions[event["name"]]
    if " while(" in text or " conditional(" in text or " call(" in text:
      continue  # Their bodies' ops are traced themselves.
    yield event, text


def summarise(trace_events, instructions, computations, steps: int):
  """(per-step µs by kind, per-step µs by (path, direction, kind), number of matched events)."""
  by_kind, by_path = collections.Counter(), collections.Counter()
  matched = 0
  for event, text in _traced_ops(trace_events, instructions):
    kind = op_kind(text, computations)
    path, direction = model_path(text)
    by_kind[kind] += event["dur"] / steps
    by_path[(path, direction, kind)] += event["dur"] / steps
    matched += 1
  return by_kind, by_path, matched


_STEP_WINDOW = "ThunkExecutor::Execute (wait for completion)"


def coverage(trace_events, instructions, steps: int) -> dict | None:
  """Per-step µs of the runtime's execution window, and within it: time with at least one
  traced op running (`busy`), with none (`untraced`), and with two or more (`overlapped`).

  None when the trace has no per-step window event (another runtime or backend).
  """
  windows = [(e["ts"], e["ts"] + e["dur"]) for e in trace_events
             if e.get("ph") == "X" and e.get("name") == _STEP_WINDOW]
  if not windows:
    return None
  edges = []
  for event, _ in _traced_ops(trace_events, instructions):
    edges += [(event["ts"], 1), (event["ts"] + event["dur"], -1)]
  edges.sort()
  busy = overlapped = 0.0
  for start, end in windows:
    running, last = 0, start
    for ts, delta in edges:
      ts = min(max(ts, start), end)
      if running >= 1:
        busy += ts - last
      if running >= 2:
        overlapped += ts - last
      running, last = running + delta, ts
  window = sum(end - start for start, end in windows)
  return {"window": window / steps, "busy": busy / steps, "untraced": (window - busy) / steps,
          "overlapped": overlapped / steps}


def _load_trace(trace_dir: str):
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))
  if not files:
    raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}: the profiler wrote no trace")
  with gzip.open(files[-1]) as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--size", default="base",
                 help="tiny / small / base, or cpu (the quick start's model)")
  p.add_argument("--variant", default="mae", help="merit | mae (λ = 0)")
  p.add_argument("--view", default="masked")
  p.add_argument("--rate", type=int, default=100)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--steps", type=int, default=2, help="traced steps (averaged)")
  p.add_argument("--top", type=int, default=25, help="model paths to list")
  p.add_argument("--trace_dir", default=None, help="keep the trace here (default: temporary)")
  p.add_argument("--no_xla_defaults", action="store_true")
  args = p.parse_args(argv)
  if args.steps < 1:
    p.error("--steps must be at least 1")
  if not args.no_xla_defaults:
    xla_defaults.apply()

  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import train_step as bench  # pylint: disable=g-import-not-at-top

  config = bench.make_config(args.size, args.rate, args.variant, args.view, False, args.dtype,
                             args.batch_size)
  devices = jax.devices()[:1]
  _, state, train_step, batch, rng = bench.setup_step(config, devices)
  compiled = train_step.jitted.lower(state, batch, rng).compile()
  instructions, computations = parse_hlo(compiled.as_text())
  for _ in range(2):  # Warm-up.
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready((state, metrics))

  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="op_profile_")
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  for _ in range(args.steps):
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))
  jax.profiler.stop_trace()
  events = _load_trace(trace_dir)
  by_kind, by_path, matched = summarise(events, instructions, computations, args.steps)
  cover = coverage(events, instructions, args.steps)
  if not matched:
    sys.exit("op_profile: no traced op matched the compiled HLO (this tool reads XLA:CPU "
             f"thunk traces; device: {devices[0].platform}). Trace kept in {trace_dir}")

  total = sum(by_kind.values())
  print(f"{args.size} {args.variant} {args.view} {args.rate} Hz {args.dtype} batch "
        f"{args.batch_size}: {bench.analytic_flops_per_step(config) / 1e9:.0f} model GFLOP, "
        f"traced op time {total / 1e3:.1f} ms per step ({matched // args.steps} ops)")
  if cover:
    print(f"step execution window {cover['window'] / 1e3:.1f} ms: traced ops running "
          f"{cover['busy'] / 1e3:.1f} ms, two or more at once {cover['overlapped'] / 1e3:.1f} ms, "
          f"none traced {cover['untraced'] / 1e3:.1f} ms "
          f"({100 * cover['untraced'] / cover['window']:.1f} %: asynchronous ops such as Eigen "
          "`dot`s, traced only at launch)")
  print("\nby kind of op:")
  for kind, us in by_kind.most_common():
    print(f"  {us / 1e3:9.1f} ms  {100 * us / total:5.1f} %  {kind}")
  print(f"\ntop {args.top} model paths (block indices folded):")
  for (path, direction, kind), us in by_path.most_common(args.top):
    print(f"  {us / 1e3:9.1f} ms  {100 * us / total:5.1f} %  {direction}  {kind:14s} {path}")
  if args.trace_dir:
    print(f"\ntrace: {trace_dir} (open in Perfetto or TensorBoard)")


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  main()
