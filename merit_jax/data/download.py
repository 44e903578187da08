"""Downloads public ECG datasets with checksums, resume and safe extraction.

Two ways to fetch a dataset:

* a PhysioNet-style file tree: `SHA256SUMS.txt` is fetched from the base URL and
  every file it lists (or those under `--include` prefixes) is downloaded and
  verified against its SHA256;
* one zip archive (`--archive_url`), verified when a SHA256 is given, then
  extracted after every member was checked to land inside the target folder.

Every file is written to `NAME.part` first. An interrupted download resumes from
the bytes already there with an HTTP `Range` request; a file reaches its final
name only through an atomic rename after its checksum matched, so nothing
half-written ever sits under a final name. A checksum mismatch deletes the part
file and names the file in the error.

Usage:
  python -m merit_jax.data.download ptbxl --target_dir=DIR [--include=records100] [--workers=4]
  python -m merit_jax.data.download ptbxl --target_dir=DIR \
      --archive_url=https://.../ptb-xl.zip [--archive_sha256=HEX]

Only the standard library (urllib) is used for HTTP.
"""

import concurrent.futures
import dataclasses
import hashlib
import http.client
import os
import pathlib
import posixpath
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Iterable, Optional, Sequence

import tqdm

# Base URLs of the PhysioNet file trees this command knows. Each serves a
# `SHA256SUMS.txt` listing every file of the release.
DATASETS = {
    "ptbxl": "https://physionet.org/files/ptb-xl/1.0.3/",
    "mimic_iv_ecg": "https://physionet.org/files/mimic-iv-ecg/1.0/",
    "physionet2021": "https://physionet.org/files/challenge-2021/1.0.3/",
}
CHECKSUM_FILE = "SHA256SUMS.txt"
_CHUNK = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class DownloadError(RuntimeError):
  """A file could not be downloaded (network, HTTP status or checksum)."""


class ChecksumError(DownloadError):
  """A downloaded file's SHA256 differs from the expected one."""


class UnsafeArchiveError(DownloadError):
  """An archive holds members that would be written outside the target folder."""


@dataclasses.dataclass
class TreeResult:
  """What `download_tree` did: relative paths per outcome."""
  downloaded: list
  already_present: list
  failed: dict  # relative path -> reason


def sha256_of(path: os.PathLike, chunk_size: int = _CHUNK) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk_size), b""):
      digest.update(block)
  return digest.hexdigest()


def parse_sha256sums(text: str, source: str = CHECKSUM_FILE) -> dict:
  """Parses `sha256sum` output (`HASH  path` or `HASH *path`) into {path: hash}."""
  sums = {}
  for line_no, line in enumerate(text.splitlines(), 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    parts = line.split(None, 1)
    if len(parts) != 2 or not _SHA256_RE.match(parts[0]):
      raise DownloadError(
          f"{source} line {line_no}: expected '<64 hex digits> <path>', got {line!r}")
    digest, rel = parts[0].lower(), parts[1].strip().lstrip("*")
    _check_relative_path(rel, f"{source} line {line_no}")
    sums[rel] = digest
  return sums


def _check_relative_path(rel: str, where: str) -> None:
  """Refuses a listed path that is absolute or climbs out with `..`."""
  normalised = rel.replace("\\", "/")
  if (not normalised or normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised)
      or ".." in normalised.split("/")):
    raise UnsafeArchiveError(f"{where}: path {rel!r} would land outside the target folder")


def _open(url: str, headers: dict, timeout: float):
  request = urllib.request.Request(url, headers={"User-Agent": "merit_jax-download", **headers})
  return urllib.request.urlopen(request, timeout=timeout)


def download_file(url: str,
                  dest: os.PathLike,
                  expected_sha256: Optional[str] = None,
                  *,
                  retries: int = 3,
                  timeout: float = 60.0,
                  progress: bool = True) -> pathlib.Path:
  """Downloads `url` to `dest` through `dest.part`, resuming and verifying.

  Args:
    url: the file's URL.
    dest: final path; its parent folders are created.
    expected_sha256: hex digest; when given, a mismatch deletes the part file and
      raises `ChecksumError` (after one fresh download when the mismatch followed a
      resume, since a stale part file may be at fault). When None the file is kept
      unverified.
    retries: further attempts after a network error; each resumes from the bytes
      already in the part file.
    timeout: socket timeout in seconds.
    progress: show a tqdm byte progress bar.

  Returns:
    `dest` as a Path.
  """
  dest = pathlib.Path(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
  part = dest.with_name(dest.name + ".part")
  resumed = part.exists() and part.stat().st_size > 0
  last_error = None
  for attempt in range(retries + 1):
    if attempt:
      time.sleep(min(2 ** (attempt - 1), 10) * 0.1)
    try:
      _fetch_into_part(url, part, timeout=timeout, progress=progress)
      break
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
      if isinstance(e, urllib.error.HTTPError) and e.code < 500 and e.code != 416:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
      last_error = e
  else:
    raise DownloadError(
        f"{url}: failed after {retries + 1} attempts ({last_error}); the partial file "
        f"{part} is kept and the next run resumes from it") from last_error

  if expected_sha256 is not None:
    actual = sha256_of(part)
    if actual != expected_sha256.lower():
      part.unlink()
      if resumed:
        # The old part file may come from another version of the file: start afresh once.
        return download_file(url, dest, expected_sha256, retries=retries, timeout=timeout,
                             progress=progress)
      raise ChecksumError(f"{url}: SHA256 mismatch for {dest} (expected {expected_sha256}, "
                          f"got {actual}); the partial file was deleted")
  os.replace(part, dest)  # Atomic: `dest` is either absent or complete.
  return dest


def _fetch_into_part(url: str, part: pathlib.Path, *, timeout: float, progress: bool) -> None:
  """Appends the missing bytes of `url` to `part` (Range resume when possible)."""
  have = part.stat().st_size if part.exists() else 0
  headers = {"Range": f"bytes={have}-"} if have else {}
  try:
    response = _open(url, headers, timeout)
  except urllib.error.HTTPError as e:
    if e.code == 416 and have:
      # The part file already holds the whole file (or more): let the checksum decide.
      return
    raise
  with response:
    mode = "ab"
    if have and response.status != 206:
      # The server ignored the Range header and sends the whole file again.
      have, mode = 0, "wb"
    elif have:
      content_range = response.headers.get("Content-Range", "")
      match = re.match(r"bytes (\d+)-", content_range)
      if not match or int(match.group(1)) != have:
        raise DownloadError(f"{url}: asked for bytes from {have} but the server answered "
                            f"Content-Range {content_range!r}")
    length = response.headers.get("Content-Length")
    total = have + int(length) if length is not None else None
    with open(part, mode) as out, tqdm.tqdm(
        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
        desc=part.name[:-len(".part")], disable=not progress, leave=False) as bar:
      received = 0
      while True:
        block = response.read(_CHUNK)
        if not block:
          break
        out.write(block)
        received += len(block)
        bar.update(len(block))
    if length is not None and received != int(length):
      raise ConnectionError(f"{url}: connection closed after {received} of {length} bytes")


def fetch_checksums(base_url: str, *, timeout: float = 60.0) -> dict:
  """Downloads and parses `SHA256SUMS.txt` from a PhysioNet-style base URL."""
  url = urllib.parse.urljoin(_as_dir_url(base_url), CHECKSUM_FILE)
  try:
    with _open(url, {}, timeout) as response:
      text = response.read().decode("utf-8")
  except urllib.error.URLError as e:
    raise DownloadError(f"could not fetch the checksum list {url}: {e}") from e
  return parse_sha256sums(text, source=url)


def _as_dir_url(url: str) -> str:
  return url if url.endswith("/") else url + "/"


def select_files(sums: dict, include: Sequence[str] = ()) -> list:
  """Relative paths to fetch: all, or those under an `include` prefix.

  Top-level files (metadata CSVs, license) are always kept: a records subset is
  useless without them.
  """
  if not include:
    return sorted(sums)
  prefixes = [p.strip().strip("/") for p in include if p.strip()]
  chosen = []
  for rel in sorted(sums):
    if "/" not in rel or any(rel == p or rel.startswith(p + "/") for p in prefixes):
      chosen.append(rel)
  return chosen


def download_tree(base_url: str,
                  target_dir: os.PathLike,
                  include: Sequence[str] = (),
                  *,
                  workers: int = 4,
                  retries: int = 3,
                  timeout: float = 60.0,
                  progress: bool = True) -> TreeResult:
  """Downloads the files listed in `base_url/SHA256SUMS.txt` into `target_dir`.

  Files already present with the right checksum are skipped, so a rerun only
  fetches what is missing. A file that fails (network or checksum) does not stop
  the others; all failures are raised together at the end.

  Args:
    base_url: folder URL holding `SHA256SUMS.txt`.
    target_dir: local folder; the tree is recreated under it.
    include: path prefixes to fetch (top-level files always come along).
    workers: parallel connections (PhysioNet trees hold many small files).
    retries: further attempts per file after a network error, each resuming.
    timeout: socket timeout in seconds.
    progress: show a tqdm bar over files.

  Raises:
    DownloadError: listing the files that failed, after trying all of them; its
      `result` attribute holds the `TreeResult`.
  """
  target = pathlib.Path(target_dir)
  target.mkdir(parents=True, exist_ok=True)
  base = _as_dir_url(base_url)
  sums = fetch_checksums(base, timeout=timeout)
  wanted = select_files(sums, include)
  if not wanted:
    raise DownloadError(f"no file in {base}{CHECKSUM_FILE} matches --include={list(include)}")
  # Keep the checksum list beside the data so the folder can be re-verified offline.
  sums_tmp = target / (CHECKSUM_FILE + ".part")
  sums_tmp.write_text("".join(f"{sums[rel]} {rel}\n" for rel in sorted(sums)), encoding="utf-8")
  os.replace(sums_tmp, target / CHECKSUM_FILE)

  def fetch(rel: str) -> str:
    dest = target / rel
    if dest.is_file() and sha256_of(dest) == sums[rel]:
      return "present"
    download_file(base + urllib.parse.quote(rel), dest, sums[rel], retries=retries,
                  timeout=timeout, progress=False)
    return "downloaded"

  result = TreeResult(downloaded=[], already_present=[], failed={})
  with concurrent.futures.ThreadPoolExecutor(max(1, int(workers))) as pool, tqdm.tqdm(
      total=len(wanted), desc="files", unit="file", disable=not progress) as bar:
    futures = {pool.submit(fetch, rel): rel for rel in wanted}
    for future in concurrent.futures.as_completed(futures):
      rel = futures[future]
      try:
        outcome = future.result()
      except DownloadError as e:
        result.failed[rel] = str(e)
      else:
        (result.downloaded if outcome == "downloaded" else result.already_present).append(rel)
      bar.update(1)
  result.downloaded.sort()
  result.already_present.sort()
  if result.failed:
    lines = "\n".join(f"  {rel}: {why}" for rel, why in sorted(result.failed.items()))
    error = DownloadError(f"{len(result.failed)} of {len(wanted)} files failed "
                          f"(rerun to resume):\n{lines}")
    error.result = result
    raise error
  return result


def check_zip_members(names: Iterable[str], target_dir: os.PathLike) -> None:
  """Raises `UnsafeArchiveError` naming every member that would escape `target_dir`."""
  root = pathlib.Path(target_dir).resolve()
  unsafe = []
  for name in names:
    normalised = name.replace("\\", "/")
    if (normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised)
        or ".." in normalised.split("/")):
      unsafe.append(name)
      continue
    resolved = (root / posixpath.normpath(normalised)).resolve()
    if resolved != root and root not in resolved.parents:
      unsafe.append(name)
  if unsafe:
    raise UnsafeArchiveError(
        f"refusing to extract: {len(unsafe)} archive member(s) would land outside "
        f"{root} (absolute paths or '..'): {unsafe[:10]}")


def safe_extract_zip(zip_path: os.PathLike, target_dir: os.PathLike) -> list:
  """Extracts a zip into `target_dir` after checking every member; returns names.

  Nothing is extracted when any member is unsafe.
  """
  target = pathlib.Path(target_dir)
  target.mkdir(parents=True, exist_ok=True)
  try:
    archive = zipfile.ZipFile(zip_path)
  except zipfile.BadZipFile as e:
    raise DownloadError(f"{zip_path} is not a valid zip archive: {e}") from e
  with archive:
    names = archive.namelist()
    check_zip_members(names, target)
    bad = archive.testzip()
    if bad is not None:
      raise DownloadError(f"{zip_path}: member {bad!r} is corrupt (CRC mismatch)")
    archive.extractall(target)
  return names


def download_archive(archive_url: str,
                     target_dir: os.PathLike,
                     sha256: Optional[str] = None,
                     *,
                     keep_archive: bool = False,
                     retries: int = 3,
                     timeout: float = 60.0,
                     progress: bool = True) -> list:
  """Downloads one zip (resume + checksum) and extracts it safely into `target_dir`.

  The archive is saved beside the extracted files as its URL's file name and
  deleted after a successful extraction unless `keep_archive`.

  Returns:
    The archive's member names.
  """
  target = pathlib.Path(target_dir)
  target.mkdir(parents=True, exist_ok=True)
  name = posixpath.basename(urllib.parse.urlparse(archive_url).path) or "archive.zip"
  zip_path = target / name
  if not (zip_path.is_file() and sha256 is not None and sha256_of(zip_path) == sha256.lower()):
    download_file(archive_url, zip_path, sha256, retries=retries, timeout=timeout,
                  progress=progress)
  if sha256 is None:
    print(f"warning: no --archive_sha256 given; {name} has SHA256 {sha256_of(zip_path)} "
          "(compare it with the publisher's)", file=sys.stderr)
  names = safe_extract_zip(zip_path, target)
  if not keep_archive:
    zip_path.unlink()
  return names


def download(url: str,
             target_dir: os.PathLike,
             *,
             include: Sequence[str] = (),
             sha256: Optional[str] = None,
             **kwargs):
  """Downloads a `.zip` archive URL or a PhysioNet-style file tree base URL.

  Returns the archive's member names for an archive, else a `TreeResult`.
  """
  if urllib.parse.urlparse(url).path.lower().endswith(".zip"):
    return download_archive(url, target_dir, sha256, **kwargs)
  return download_tree(url, target_dir, include, **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog="python -m merit_jax.data.download", description=__doc__.split("\n\n")[0])
  parser.add_argument("dataset", choices=sorted(DATASETS))
  parser.add_argument("--target_dir", required=True, help="folder to download into")
  parser.add_argument("--base_url", default=None,
                      help="file tree base URL holding SHA256SUMS.txt (default: the "
                      "dataset's PhysioNet URL)")
  parser.add_argument("--include", default="",
                      help="comma-separated path prefixes to fetch, e.g. records100 "
                      "(top-level files are always fetched)")
  parser.add_argument("--archive_url", default=None,
                      help="download and extract this zip instead of the file tree")
  parser.add_argument("--archive_sha256", default=None, help="expected SHA256 of the zip")
  parser.add_argument("--keep_archive", action="store_true")
  parser.add_argument("--workers", type=int, default=4, help="parallel downloads (file tree)")
  parser.add_argument("--retries", type=int, default=3)
  parser.add_argument("--timeout", type=float, default=60.0)
  args = parser.parse_args(argv)
  try:
    if args.archive_url:
      names = download_archive(args.archive_url, args.target_dir, args.archive_sha256,
                               keep_archive=args.keep_archive, retries=args.retries,
                               timeout=args.timeout)
      print(f"extracted {len(names)} members into {args.target_dir}")
    else:
      base_url = args.base_url or DATASETS[args.dataset]
      include = [p for p in args.include.split(",") if p.strip()]
      result = download_tree(base_url, args.target_dir, include, workers=args.workers,
                             retries=args.retries, timeout=args.timeout)
      print(f"{args.dataset}: {len(result.downloaded)} downloaded, "
            f"{len(result.already_present)} already present and verified, in {args.target_dir}")
  except DownloadError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
