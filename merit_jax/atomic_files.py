"""Files written whole or not at all.

Every writer fills a temporary file beside its target and renames it into place, so a crash or
an interrupt leaves the previous file (or none), never half of one that a later run would read.

  replacing(path, suffix='.tmp') -> context manager yielding the temporary path to write;
  write_bytes(path, data), write_text(path, text): whole contents at once. Object-store paths
  (gs://...) are written directly: there a single write is already all-or-nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

from etils import epath


def _is_url(path) -> bool:
  return "://" in os.fspath(path)


@contextlib.contextmanager
def replacing(path, suffix: str = ".tmp") -> Iterator[str]:
  """Yields a temporary path beside `path` and renames it to `path` when the block ends
  normally; removes it when the block raises. `suffix` ends the temporary name, so writers
  that add their own extension (np.savez: '.npz', np.save: '.npy') keep the name given."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  # The process and thread in the name keep concurrent writers of one target apart; open()
  # rather than mkstemp so the file gets the usual permissions, not 0600.
  tmp = f"{path}.{os.getpid()}-{threading.get_ident()}{suffix}"
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_bytes(path, data: bytes) -> None:
  if _is_url(path):
    epath.Path(path).write_bytes(data)
    return
  with replacing(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def write_text(path, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))
