"""xla_defaults adds its flags without overriding the user's, in time for XLA to read them."""

import os
import subprocess
import sys

from merit_jax import xla_defaults

DEFAULT = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"


def test_adds_missing_defaults_and_keeps_other_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  added = xla_defaults.apply(env)
  assert added == [DEFAULT]
  assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {DEFAULT}"


def test_empty_environment():
  env = {}
  xla_defaults.apply(env)
  assert env["XLA_FLAGS"] == DEFAULT


def test_user_setting_wins_and_apply_is_idempotent():
  for user in ("--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED",
               # The deprecated boolean sets the same scheduler: it also keeps the default out.
               "--xla_cpu_enable_concurrency_optimized_scheduler=true"):
    env = {"XLA_FLAGS": user}
    assert xla_defaults.apply(env) == []
    assert env["XLA_FLAGS"] == user
  env = {}
  xla_defaults.apply(env)
  first = env["XLA_FLAGS"]
  assert xla_defaults.apply(env) == [] and env["XLA_FLAGS"] == first


def test_flags_set_after_importing_jax_still_reach_xla():
  # The entry points call apply() in main(), after `import jax`: XLA must read XLA_FLAGS only
  # when the first backend is created. A flag with a visible effect proves the timing, and an
  # unknown or malformed default would abort this process.
  code = ("import os, jax\n"
          "os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=3'\n"
          "from merit_jax import xla_defaults\n"
          "xla_defaults.apply()\n"
          "print(len(jax.devices()), os.environ['XLA_FLAGS'])\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__))).stdout
  count, flags = out.split(maxsplit=1)
  assert count == "3"
  assert DEFAULT in flags
