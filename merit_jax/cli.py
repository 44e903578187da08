"""One flag parser for every command: config-file and override mistakes become one clear line.

Every entry point runs `app.run(main, flags_parser=cli.make_flags_parser(program))`, so a missing
config file, an unknown `--config.<key>` or a bad flag value reads the same in each command.
"""

from __future__ import annotations

import os
from typing import Any


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
    except (OSError, ImportError, SyntaxError) as e:
      path = str(flag.serialize()).split("=", 1)[-1].split(":", 1)[0]
      if not os.path.exists(path):
        raise SystemExit(f"{program}: --{name}: config file {path!r} does not exist (paths are "
                         f"relative to the current directory {os.getcwd()}; the files "
                         f"are configs/<name>.py[:variant])") from None
      raise SystemExit(f"{program}: --{name}: cannot load config file {path!r}: "
                       f"{_innermost_message(e)}") from None


def make_flags_parser(program: str):
  """An `app.run(flags_parser=...)` that turns config-override mistakes into one clear line.

  ml_collections' config_flags reports `--config.model.sizee=small` as a KeyError/AttributeError
  traceback from deep inside absl; this names the flag, the config's suggestion and the fix.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top

  def parse(argv):
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
      raise SystemExit(f"{program}: {e}\nPass --helpshort to list the flags.") from None

  return parse
