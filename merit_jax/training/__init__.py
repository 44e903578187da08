"""The training library behind `merit_jax.train`.

- `setup.py`: everything before the first step (datasets, tokenizer, state, resume);
- `loop.py`: the step loop (logging, checkpoints, preemption, non-finite guard);
- `validation.py`: train-time validation (losses, reconstruction plots, the evaluators of
  `config.evals` on the model being trained);
- `run_dir.py`: where logs go (staged locally for a `gs://` run) and the run summary.
"""
