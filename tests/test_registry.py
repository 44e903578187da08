"""Evaluator plug-ins: a new evaluator is one module plus a config entry.

The example evaluator below is written to a temporary folder added to the
`merit_jax.evaluators` package, named in `config.evals`, and run by `merit_jax.evaluate`
(the same registry training-time validation uses) next to the built-in linear probe.
"""

import json
import pathlib
import textwrap
import types

import numpy as np
import pytest

from configs import evaluate as evaluate_config
from merit_jax import evaluate
import merit_jax.evaluators
from merit_jax.evaluators import registry
from merit_jax.reporting import writer
from tests import test_evaluate_zero_shot as toy

# The whole plug-in, as docs/ARCHITECTURE.md shows it ("Where to add things"): the test runs
# the documented example itself, so the page cannot drift from the code.
_DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
PLUGIN = _DOC.read_text(encoding="utf-8").split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
  (tmp_path / "centroid.py").write_text(textwrap.dedent(PLUGIN))
  monkeypatch.setattr(merit_jax.evaluators, "__path__",
                      list(merit_jax.evaluators.__path__) + [str(tmp_path)])
  monkeypatch.setattr(toy.pipeline, "label_names", lambda data_cfg: toy.TASKS)
  yield


def _config():
  config = evaluate_config.get_config("quick")
  config.evals.nearest = dict(type="centroid", every=100, task="rhythm", split="test")
  config.evaluators = ("linear_probe", "nearest")
  config.tasks = ("rhythm",)
  config.fractions = (1.0,)
  config.n_bootstrap = 0
  config.progress = False
  config.probe.weight_decays = (0.0,)
  config.probe.max_epochs = 10
  return config


def test_a_new_evaluator_is_one_module_and_a_config_entry(plugin, tmp_path):
  store = toy.FakeStore()
  encoder = types.SimpleNamespace(
      name="toy", cache_key="toy", embed_ecg=toy._embed_ecg,  # pylint: disable=protected-access
      has_text=False, params=None, model=None, step=0, feature_kinds=("pooled", "projected"))
  results = evaluate.evaluate_encoders([encoder], {}, _config(), str(tmp_path / "out"),
                                       store=store, metrics_dir=str(tmp_path / "metrics"))
  # The same computation by hand.
  train, test = store.split("train"), store.split("test")
  x_train, x_test = train.ecg[:, 0], test.ecg[:, 0]
  y_train = train.labels["rhythm"][:, 0].astype(bool)
  y_test = test.labels["rhythm"][:, 0].astype(bool)
  to_pos = np.linalg.norm(x_test - x_train[y_train].mean(0), axis=1)
  to_neg = np.linalg.norm(x_test - x_train[~y_train].mean(0), axis=1)
  expected = float(np.mean((to_pos < to_neg) == y_test))
  assert results["centroid"]["toy"] == {"accuracy": pytest.approx(expected), "n": len(y_test)}
  assert list(results)[:3] == ["meta", "linear_probe", "centroid"]
  # Its headline number went to the metric writer beside the probe's.
  rows = [json.loads(line) for line in (tmp_path / "metrics" / "metrics.jsonl").open()]
  assert rows[0]["toy/centroid/accuracy"] == pytest.approx(expected)
  assert "toy/linear_probe/rhythm/1.0/macro_auroc" in rows[0]
  # And into the result files.
  paths = writer.write_results(results, str(tmp_path / "results"), "plugin")
  saved = json.loads(open(paths["json"], encoding="utf-8").read())
  assert saved["centroid"]["toy"]["accuracy"] == pytest.approx(expected)


def test_build_evaluators_reads_type_and_schedule(plugin):
  config = _config()
  context = registry.EvalContext(data_cfg={}, store=toy.FakeStore())
  built = registry.build_evaluators(config.evals, context, ["nearest", "retrieval"])
  assert list(built) == ["nearest", "retrieval"]
  assert built["nearest"].every == 100 and built["retrieval"].every == 0
  assert built["nearest"].sections == ("centroid",)
  config.evals.broken = dict(type="no_such_module", every=0)
  with pytest.raises(ValueError, match="no module merit_jax/evaluators/no_such_module.py"):
    registry.build_evaluators(config.evals, context, ["broken"])
  with pytest.raises(ValueError, match="config.evals has no section 'missing'"):
    registry.build_evaluators(config.evals, context, ["missing"])
