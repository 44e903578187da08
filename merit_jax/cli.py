"""One flag parser for every command, and where the config files are.

Every entry point runs `app.run(main, flags_parser=cli.make_flags_parser(program))`, so a missing
config file, an unknown `--config.<key>` or a bad flag value reads the same in each command.
Its console script (pyproject.toml) calls the module's `cli_main()`, which does just that.

`define_page_flags`, `read_json_inputs` and `write_page` are the flags, input and output of the
commands that summarise result files into a page (seed_summary, validation_table,
report_gen.recipe_table).

Config files are found by path. A path of the form `configs/<file>.py` that does not exist
relative to the current directory falls back to the project's own configs/ (beside the
package in a checkout, `merit_jax/configs` once installed), so the README's commands also run
from outside the repository.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
from typing import Any, Sequence

from absl import flags

import ml_collections

from merit_jax import atomic_files

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def config_dir() -> pathlib.Path:
  """The project's configs/: inside the package once installed, beside it in a checkout."""
  for candidate in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs"):
    if (candidate / "pretrain.py").is_file():
      return candidate
  raise FileNotFoundError(f"no configs/pretrain.py beside or inside {_PACKAGE_DIR}")


def load_config_file(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of configs/<name> (e.g. "pretrain.py"), loaded by its path."""
  path = config_dir() / name
  spec = importlib.util.spec_from_file_location(f"merit_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _with_project_configs(argv: Sequence[str], config_flags: Sequence[str]) -> list[str]:
  """Points `--<flag>=configs/<file>.py[:arg]` at the project's configs/ where the path does
  not exist relative to the current directory."""
  out = list(argv)
  for i, arg in enumerate(out):
    name, sep, value = arg.lstrip("-").partition("=")
    if not arg.startswith("--") or not sep or name not in config_flags:
      continue
    path, colon, variant = value.partition(":")
    head, tail = os.path.split(os.path.normpath(path))
    if os.path.exists(path) or head != "configs":
      continue
    try:
      candidate = config_dir() / tail
    except FileNotFoundError:
      continue
    if candidate.is_file():
      out[i] = f"--{name}={candidate}{colon}{variant}"
  return out


def _innermost_message(error: BaseException) -> str:
  message: Any = error
  while isinstance(message, BaseException) and message.args:
    message = message.args[0]
  return str(message)


def _load_config_flags(program: str, flag_values) -> None:
  """Loads every config-file flag now, so a missing or broken file is one clear line.

  ml_collections defers a config file's load error to the first read of the flag, where it
  surfaces as a traceback from inside the program.
  """
  from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
  for name in list(flag_values):
    flag = flag_values[name]
    # The file flags themselves, not their `--config.<key>` override flags.
    if not isinstance(flag, config_flags._ConfigFlag):  # pylint: disable=protected-access
      continue
    try:
      value = getattr(flag_values, name)
      if value is not None:
        value.keys()  # A file that failed to load yields a proxy that raises here.
    except (OSError, ImportError, SyntaxError, ValueError) as e:  # ValueError: a bad variant.
      path = str(flag.serialize()).split("=", 1)[-1].split(":", 1)[0]
      if not os.path.exists(path):
        raise SystemExit(f"{program}: --{name}: config file {path!r} does not exist (paths are "
                         f"relative to the current directory {os.getcwd()}; the project's "
                         f"files are configs/<name>.py[:variant])") from None
      raise SystemExit(f"{program}: --{name}: cannot load config file {path!r}: "
                       f"{_innermost_message(e)}") from None


def make_flags_parser(program: str):
  """An `app.run(flags_parser=...)` that turns config-override mistakes into one clear line.

  ml_collections' config_flags reports `--config.model.sizee=small` as a KeyError/AttributeError
  traceback from deep inside absl; this names the flag, the config's suggestion and the fix.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
  file_flag = config_flags._ConfigFlag  # pylint: disable=protected-access

  def parse(argv):
    file_flags = [name for name in flags.FLAGS if isinstance(flags.FLAGS[name], file_flag)]
    argv = _with_project_configs(argv, file_flags)
    try:
      rest = flags.FLAGS(argv)
      _load_config_flags(program, flags.FLAGS)
      return rest
    except (AttributeError, KeyError) as e:
      overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
      detail = " ".join(_innermost_message(e).replace("\\n", "\n").replace("'", "").split())
      raise SystemExit(
          f"{program}: unknown config key in the overrides {overrides} ({detail}). Every "
          "--config.<key> must name a key the config file defines (see configs/pretrain.py "
          "and the schema in docs/ARCHITECTURE.md).") from None
    except flags.Error as e:
      message = str(e)
      if "Traceback" in message:  # A config file's get_config raised: keep its last line.
        lines = [line for line in message.splitlines() if line.strip()]
        message = f"{lines[0].split(': Error', 1)[0]}: {lines[-1]}"
      raise SystemExit(f"{program}: {message}\nPass --helpshort to list the flags.") from None

  return parse


def define_page_flags(inputs: str, inputs_help: str) -> None:
  """The required flags of a page command: the list `--<inputs>` and the Markdown `--output`.

  Called from the command's `cli_main()` only: other modules that tests import define
  --output too, and absl refuses a flag defined twice.
  """
  flags.DEFINE_list(inputs, None, inputs_help)
  flags.DEFINE_string("output", None, "Markdown file to write.")
  flags.mark_flags_as_required([inputs, "output"])


def read_json_inputs(paths: Sequence[str], program: str) -> list:
  """The JSON files a summarising command reads; exits naming the file that is missing or
  not JSON."""
  results = []
  for path in paths:
    if not os.path.isfile(path):
      raise SystemExit(f"{program}: {path} does not exist")
    try:
      with open(path, encoding="utf-8") as f:
        results.append(json.load(f))
    except ValueError as e:
      raise SystemExit(f"{program}: {path} is not valid JSON ({e})") from None
  return results


def write_page(path: str, text: str) -> str:
  """Writes a results page through a temporary file, so no half-written page is left behind;
  returns the absolute path."""
  path = os.path.abspath(os.path.expanduser(path))
  atomic_files.write_text(path, text)
  return path
