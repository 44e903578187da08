"""benchmarks/op_profile.py: HLO parsing, op kinds, model paths, a run of the quick start model."""

import contextlib
import io
import re

from benchmarks import op_profile

HLO = """HloModule jit_step_fn

%fused_dot (param_0: f32[8,4], param_1: f32[4,2]) -> f32[8,2] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %param_1 = f32[4,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,2]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_gelu (param_0.1: f32[8,2]) -> f32[8,2] {
  %param_0.1 = f32[8,2]{1,0} parameter(0)
  ROOT %multiply.1 = f32[8,2]{1,0} multiply(%param_0.1, %param_0.1)
}

%fused_transpose (param_0.2: f32[8,2]) -> f32[2,8] {
  %param_0.2 = f32[8,2]{1,0} parameter(0)
  ROOT %transpose.1 = f32[2,8]{1,0} transpose(%param_0.2), dimensions={1,0}
}

ENTRY %main (x: f32[8,4], w: f32[4,2]) -> f32[2,8] {
  %x = f32[8,4]{1,0} parameter(0)
  %w = f32[4,2]{1,0} parameter(1)
  %ynn_fusion.1 = f32[8,2]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_dot, metadata={op_name="jit(step_fn)/jvp(MERIT)/encoder/transformer/block3/mlp/fc1/dot_general"}
  %gelu_fusion = f32[8,2]{1,0} fusion(%ynn_fusion.1), kind=kLoop, calls=%fused_gelu, metadata={op_name="jit(step_fn)/transpose(jvp(MERIT))/encoder/transformer/block11/mlp/mul"}
  ROOT %transpose_fusion = f32[2,8]{1,0} fusion(%gelu_fusion), kind=kLoop, calls=%fused_transpose, metadata={op_name="jit(step_fn)/cond/branch_1_fun/transpose"}
}
"""


def test_parse_and_classify():
  instructions, computations = op_profile.parse_hlo(HLO)
  assert op_profile.op_kind(instructions["ynn_fusion.1"], computations) == "matmul"
  assert op_profile.op_kind(instructions["gelu_fusion"], computations) == "elementwise"
  assert op_profile.op_kind(instructions["transpose_fusion"], computations) == "copy/transpose"
  assert op_profile.model_path(instructions["ynn_fusion.1"]) == (
      "encoder/transformer/block*/mlp/fc1/dot_general", "fwd")
  assert op_profile.model_path(instructions["gelu_fusion"]) == (
      "encoder/transformer/block*/mlp/mul", "bwd")
  assert op_profile.model_path(instructions["transpose_fusion"])[1] == "-"


def test_summarise_averages_over_steps_and_skips_unknown_events():
  instructions, computations = op_profile.parse_hlo(HLO)
  events = [{"ph": "X", "name": "ynn_fusion.1", "dur": 300},
            {"ph": "X", "name": "ynn_fusion.1", "dur": 100},
            {"ph": "X", "name": "gelu_fusion", "dur": 50},
            {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 10_000},
            {"ph": "i", "name": "gelu_fusion"}]
  by_kind, by_path, matched = op_profile.summarise(events, instructions, computations, steps=2)
  assert matched == 3
  assert by_kind == {"matmul": 200.0, "elementwise": 25.0}
  assert sum(by_path.values()) == 225.0


def test_cpu_size_step_end_to_end():
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    op_profile.main(["--size=cpu", "--variant=mae", "--batch_size=2", "--steps=1",
                     "--top=1000", "--no_xla_defaults"])  # Every path: the order is timing's.
  text = out.getvalue()
  assert "by kind of op:" in text and "matmul" in text
  assert "step execution window" in text
  assert "/transformer/block*/" in text  # Block indices folded...
  assert not re.search(r"/block\d+/", text)  # ...everywhere.


def test_coverage_counts_untraced_and_overlapped_time_inside_the_step_window():
  instructions, _ = op_profile.parse_hlo(HLO)
  window = op_profile._STEP_WINDOW  # pylint: disable=protected-access
  events = [
      {"ph": "X", "name": window, "ts": 0, "dur": 100},
      {"ph": "X", "name": "ynn_fusion.1", "ts": 10, "dur": 30},   # 10-40
      {"ph": "X", "name": "gelu_fusion", "ts": 30, "dur": 20},    # 30-50: overlaps 30-40
      {"ph": "X", "name": "transpose_fusion", "ts": 90, "dur": 30},  # clipped to 90-100
      {"ph": "X", "name": "ThunkExecutor::Execute", "ts": 0, "dur": 100},  # Not an op.
      {"ph": "X", "name": window, "ts": 200, "dur": 50},
      {"ph": "X", "name": "ynn_fusion.1", "ts": 200, "dur": 50},
  ]
  cover = op_profile.coverage(events, instructions, steps=2)
  assert cover == {"window": 75.0, "busy": (50 + 50) / 2, "untraced": (50 + 0) / 2,
                   "overlapped": 10 / 2}
  assert op_profile.coverage(events[1:5], instructions, steps=1) is None
