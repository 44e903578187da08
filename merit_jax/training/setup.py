"""Everything a training run needs before its first step: data, tokenizer, state, resume."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from merit_jax import checkpoint as checkpoint_lib
from merit_jax import parallel
from merit_jax import provision
from merit_jax import step as step_lib
from merit_jax.data import pipeline
from merit_jax.models import merit as merit_lib


@dataclasses.dataclass
class Run:
  """The live objects of one training run (see `setup`)."""
  config: Any
  workdir: str
  mesh: Any
  tokenizer: Any  # Saved with the run; the text tower's own for a frozen tower.
  text_input: Any  # What the pipeline encodes reports with (tokenizer or embedding cache).
  model: Any
  checkpointer: checkpoint_lib.Checkpointer
  train_iter: Any
  state: step_lib.TrainState
  start_step: int
  train_step: Callable
  eval_step: Callable
  loop_rng: jax.Array


def load_text_input(config) -> tuple[Any, Any]:
  """(tokenizer, text input of the pipeline) for a run.

  A trained text tower reads token ids: both are the dataset's tokenizer. A frozen pretrained
  tower (`model.text.frozen`) reads its report embeddings from a cache computed once per build
  (data/text_cache.py), and the tokenizer saved with the run is the tower's own.
  """
  from merit_jax.data import text_cache  # pylint: disable=g-import-not-at-top
  from merit_jax.models import text_tower  # pylint: disable=g-import-not-at-top
  if not text_tower.is_frozen(config.model.text):
    tokenizer = pipeline.load_data_tokenizer(config.data)
    return tokenizer, tokenizer
  tower = text_tower.FrozenTextTower.from_config(config.model.text,
                                                 batch_size=int(config.eval.batch_size))
  return tower.tokenizer, text_cache.for_data(tower, config.data,
                                              progress=jax.process_index() == 0)


def setup(config, workdir: str) -> Run:
  """Builds (or resumes) the run in `workdir`; `config` is completed in place (vocab size).

  Raises:
    provision.DatasetNotFound: a dataset is neither built nor buildable.
    checkpoint.IncompatibleCheckpointError: the workdir's checkpoint is of another model;
      raised before anything in the workdir is overwritten.
  """
  main = jax.process_index() == 0
  mesh = parallel.make_mesh(config.mesh)
  provision.drop_sources_without_use(config)
  provision.ensure_datasets(config.data)
  tokenizer, text_input = load_text_input(config)
  config.model.text.vocab_size = int(tokenizer.vocab_size)
  ckpt = checkpoint_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  try:
    resume_step = ckpt.latest_step()
    if resume_step is not None:
      # Before anything is overwritten or compiled: the checkpoint must fit this model.
      checkpoint_lib.check_compatible(ckpt.saved_config(resume_step), config,
                                      f"{ckpt.latest.directory}/{resume_step}")
    checkpoint_lib.save_run_files(workdir, config, tokenizer)

    train_iter = pipeline.make_train_iterator(config.data, mesh, config.batch_size, config.seed,
                                              text_input)
    init_rng, loop_rng = jax.random.split(jax.random.key(config.seed))
    state, state_shardings = step_lib.create_train_state(config, mesh, init_rng)
    start_step = 0
    if resume_step is not None:
      state, data_state, start_step = ckpt.restore(state, resume_step)
      train_iter.set_state(data_state)
      if main:
        print(f"resumed from {ckpt.latest.directory}/{start_step}", flush=True)
  except BaseException:
    # Orbax's manager runs background threads; left open, a refusal (e.g. an incompatible
    # checkpoint) ends with their traceback at interpreter shutdown after the clear message.
    ckpt.close()
    raise
  return Run(config=config, workdir=workdir, mesh=mesh, tokenizer=tokenizer,
             text_input=text_input, model=merit_lib.build_model(config), checkpointer=ckpt,
             train_iter=train_iter, state=state, start_step=start_step,
             train_step=step_lib.make_train_step(config, mesh, state_shardings),
             eval_step=step_lib.make_eval_step(config, mesh, state_shardings),
             loop_rng=loop_rng)
