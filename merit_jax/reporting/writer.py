"""Result files: `<name>.json` (results_json), `.md` and the PNGs (write_results)."""

from __future__ import annotations

import json
import pathlib
from typing import Optional

import numpy as np

from merit_jax import atomic_files
from merit_jax.reporting import markdown
from merit_jax.reporting import plots


def _json_default(obj):
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, (np.floating, np.integer)):
    return obj.item()
  return str(obj)


def results_json(results: dict) -> str:
  """The results as JSON: one level of indentation per nesting level, but every list of plain
  numbers (or strings) on one line. `json.dumps(indent=1)` puts each number of the stored
  score matrices on its own, deeply indented line, which made a grid's file several times
  larger than its content.
  """
  plain = json.loads(json.dumps(results, default=_json_default, allow_nan=True))

  def fmt(obj, level: int) -> str:
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict) and obj:
      return "{\n" + ",\n".join(f"{inner}{json.dumps(k)}: {fmt(v, level + 1)}"
                                for k, v in obj.items()) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
      return "[\n" + ",\n".join(f"{inner}{fmt(v, level + 1)}" for v in obj) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=True)

  return fmt(plain, 0)


def write_results(results: dict, results_dir: str, name: str,
                  command: Optional[str] = None, title: Optional[str] = None,
                  extra_markdown: str = "") -> dict:
  """Writes <results_dir>/<name>.md, .json and the PNGs; returns {kind: path}.

  `extra_markdown` is appended to the tables (the ablation grid's own sections).
  """
  folder = pathlib.Path(results_dir)
  paths = {"json": folder / f"{name}.json", "md": folder / f"{name}.md"}
  results = dict(results, meta=dict(results["meta"], command=command))
  atomic_files.write_text(paths["json"], results_json(results))
  text = markdown.results_markdown(results, title or name, command) + extra_markdown
  atomic_files.write_text(paths["md"], text)
  fractions_png = plots.plot_fractions(results, folder / f"{name}_fractions.png")
  shift_png = plots.plot_shift(results, folder / f"{name}_shift.png")
  if fractions_png:
    paths["fractions_png"] = fractions_png
  if shift_png:
    paths["shift_png"] = shift_png
  return {k: str(v) for k, v in paths.items()}
