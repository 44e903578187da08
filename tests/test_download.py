"""Tests for merit_jax.data.download against a local Range-capable HTTP server.

The served folder is built in tmp_path from a handful of real PTB-XL files (never
copied into the repo) plus a SHA256SUMS.txt computed here.
"""

import contextlib
import hashlib
import http.server
import pathlib
import re
import shutil
import threading
import urllib.parse
import zipfile

import pytest

from merit_jax.data import download as dl

_RECORDS100 = ["00001_lr", "00002_lr", "00003_lr"]


class _RangeHandler(http.server.BaseHTTPRequestHandler):
  """Serves `server.root`; honours `Range: bytes=N-`; can cut one response short."""

  def do_GET(self):  # pylint: disable=invalid-name
    rel = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
    range_header = self.headers.get("Range")
    self.server.requests.append((rel, range_header))
    path = self.server.root / rel
    if not path.is_file():
      self.send_error(404)
      return
    data = path.read_bytes()
    start = 0
    if range_header:
      match = re.fullmatch(r"bytes=(\d+)-", range_header)
      assert match, range_header
      start = int(match.group(1))
      if start >= len(data):
        self.send_response(416)
        self.send_header("Content-Range", f"bytes */{len(data)}")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return
      self.send_response(206)
      self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
      self.send_response(200)
    body = data[start:]
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Connection", "close")
    self.end_headers()
    cut = self.server.truncate_once.pop(rel, None)
    self.wfile.write(body if cut is None else body[:cut])
    self.close_connection = True

  def log_message(self, *args):  # Keep test output quiet.
    pass


@contextlib.contextmanager
def _serve(root: pathlib.Path):
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
  server.root = root
  server.requests = []
  server.truncate_once = {}
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield server, f"http://127.0.0.1:{server.server_address[1]}/"
  finally:
    server.shutdown()
    server.server_close()
    thread.join()


def _write_sums(root: pathlib.Path, override: dict = None) -> dict:
  sums = {}
  for path in sorted(p for p in root.rglob("*") if p.is_file()):
    rel = path.relative_to(root).as_posix()
    if rel != dl.CHECKSUM_FILE:
      sums[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
  sums.update(override or {})
  (root / dl.CHECKSUM_FILE).write_text("".join(f"{h} {r}\n" for r, h in sums.items()))
  return sums


def _make_source(root: pathlib.Path, ptbxl_dir: pathlib.Path) -> pathlib.Path:
  (root / "records100" / "00000").mkdir(parents=True)
  (root / "records500" / "00000").mkdir(parents=True)
  for name in _RECORDS100:
    for ext in (".hea", ".dat"):
      shutil.copy(ptbxl_dir / "records100" / "00000" / (name + ext),
                  root / "records100" / "00000" / (name + ext))
  for ext in (".hea", ".dat"):
    shutil.copy(ptbxl_dir / "records500" / "00000" / ("00001_hr" + ext),
                root / "records500" / "00000" / ("00001_hr" + ext))
  shutil.copy(ptbxl_dir / "scp_statements.csv", root / "scp_statements.csv")
  return root


@pytest.fixture(scope="module")
def source(ptbxl_dir, tmp_path_factory):
  root = _make_source(tmp_path_factory.mktemp("served"), ptbxl_dir)
  sums = _write_sums(root)
  return root, sums


def _tree_files(root: pathlib.Path) -> dict:
  return {p.relative_to(root).as_posix(): p.read_bytes()
          for p in root.rglob("*") if p.is_file()}


def test_full_download_equals_source_and_rerun_skips(source, tmp_path):
  root, sums = source
  target = tmp_path / "ptbxl"
  with _serve(root) as (server, url):
    result = dl.download_tree(url, target, progress=False)
    assert sorted(result.downloaded) == sorted(sums)
    assert _tree_files(target) == _tree_files(root)
    assert not list(target.rglob("*.part"))
    server.requests.clear()
    again = dl.download_tree(url, target, progress=False)
  assert again.downloaded == [] and sorted(again.already_present) == sorted(sums)
  # Only the checksum list was fetched on the rerun.
  assert [rel for rel, _ in server.requests] == [dl.CHECKSUM_FILE]


def test_resume_from_partial_file_uses_range(source, tmp_path):
  root, _ = source
  rel = "records500/00000/00001_hr.dat"
  data = (root / rel).read_bytes()
  target = tmp_path / "ptbxl"
  part = target / (rel + ".part")
  part.parent.mkdir(parents=True)
  part.write_bytes(data[:3000])
  with _serve(root) as (server, url):
    dl.download_tree(url, target, progress=False)
  assert (rel, "bytes=3000-") in server.requests
  assert (target / rel).read_bytes() == data
  assert not part.exists()


def test_stale_part_file_is_replaced_after_checksum_mismatch(source, tmp_path):
  root, sums = source
  rel = "records100/00000/00001_lr.dat"
  dest = tmp_path / "00001_lr.dat"
  dest.with_name(dest.name + ".part").write_bytes(b"stale bytes of another version")
  with _serve(root) as (server, url):
    dl.download_file(url + rel, dest, sums[rel], progress=False)
  assert [r for p, r in server.requests if p == rel] == ["bytes=30-", None]
  assert dest.read_bytes() == (root / rel).read_bytes()


def test_dropped_connection_is_resumed_and_never_half_written(source, tmp_path):
  root, sums = source
  rel = "records100/00000/00002_lr.dat"
  dest = tmp_path / "out" / "00002_lr.dat"
  with _serve(root) as (server, url):
    server.truncate_once[rel] = 700
    # No retries: the cut leaves a part file and nothing under the final name.
    with pytest.raises(dl.DownloadError, match="partial file"):
      dl.download_file(url + rel, dest, sums[rel], retries=0, progress=False)
    assert not dest.exists()
    assert dest.with_name(dest.name + ".part").stat().st_size == 700
    server.truncate_once[rel] = 100
    dl.download_file(url + rel, dest, sums[rel], retries=2, progress=False)
  ranges = [r for p, r in server.requests if p == rel]
  assert ranges == [None, "bytes=700-", "bytes=800-"]
  assert dest.read_bytes() == (root / rel).read_bytes()


def test_checksum_mismatch_deletes_part_and_names_file(ptbxl_dir, tmp_path):
  root = _make_source(tmp_path / "served", ptbxl_dir)
  bad = "records100/00000/00003_lr.dat"
  _write_sums(root, override={bad: "0" * 64})
  target = tmp_path / "ptbxl"
  with _serve(root) as (_, url):
    with pytest.raises(dl.DownloadError, match=re.escape(bad)) as excinfo:
      dl.download_tree(url, target, progress=False)
  assert "SHA256 mismatch" in str(excinfo.value)
  assert not (target / bad).exists()
  assert not (target / (bad + ".part")).exists()
  # Every other file still arrived intact.
  good = "records100/00000/00001_lr.dat"
  assert (target / good).read_bytes() == (root / good).read_bytes()


def test_include_keeps_top_level_files(source, tmp_path):
  root, _ = source
  target = tmp_path / "ptbxl"
  with _serve(root) as (_, url):
    result = dl.download_tree(url, target, ["records100"], progress=False)
  assert "scp_statements.csv" in result.downloaded
  assert not (target / "records500").exists()
  assert len([r for r in result.downloaded if r.startswith("records100/")]) == 6


def test_cli(source, tmp_path, capsys):
  root, _ = source
  target = tmp_path / "cli"
  with _serve(root) as (_, url):
    rc = dl.main(["ptbxl", f"--target_dir={target}", f"--base_url={url}",
                  "--include=records500"])
  assert rc == 0
  assert "3 downloaded" in capsys.readouterr().out  # 2 records500 files + the csv
  assert (target / "records500/00000/00001_hr.hea").exists()


def test_archive_download_checksum_and_extraction(source, tmp_path):
  root, _ = source
  served = tmp_path / "served"
  served.mkdir()
  zip_path = served / "ptb-xl.zip"
  with zipfile.ZipFile(zip_path, "w") as zf:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
      zf.write(path, "ptb-xl/" + path.relative_to(root).as_posix())
  digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
  with _serve(served) as (_, url):
    with pytest.raises(dl.ChecksumError, match="ptb-xl.zip"):
      dl.download_archive(url + "ptb-xl.zip", tmp_path / "wrong", "f" * 64, progress=False)
    assert not list((tmp_path / "wrong").iterdir())
    names = dl.download(url + "ptb-xl.zip", tmp_path / "good", sha256=digest, progress=False)
  assert len(names) == len(list(root.rglob("*.*")))
  assert _tree_files(tmp_path / "good" / "ptb-xl") == _tree_files(root)
  assert not (tmp_path / "good" / "ptb-xl.zip").exists()


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/abs_evil.txt", "a/../../evil.txt",
                                  "..\\evil.txt"])
def test_zip_slip_is_refused(tmp_path, evil):
  served = tmp_path / "served"
  served.mkdir()
  with zipfile.ZipFile(served / "evil.zip", "w") as zf:
    zf.writestr("ok.txt", b"fine")
    zf.writestr(zipfile.ZipInfo(evil), b"gotcha")
  target = tmp_path / "sandbox" / "target"
  with _serve(served) as (_, url):
    with pytest.raises(dl.UnsafeArchiveError, match="outside"):
      dl.download_archive(url + "evil.zip", target, progress=False)
  # Nothing was extracted, not even the safe member.
  assert not (target / "ok.txt").exists()
  assert not (tmp_path / "sandbox" / "evil.txt").exists()
  assert not (tmp_path / "evil.txt").exists()
  assert not pathlib.Path("/tmp/abs_evil.txt").exists()


def test_parse_sha256sums_rejects_bad_lines():
  good = "a" * 64
  assert dl.parse_sha256sums(f"{good} x/y.dat\n{good} *z.csv\n") == {"x/y.dat": good,
                                                                     "z.csv": good}
  with pytest.raises(dl.DownloadError, match="line 1"):
    dl.parse_sha256sums("nothex x.dat\n")
  with pytest.raises(dl.UnsafeArchiveError):
    dl.parse_sha256sums(f"{good} ../etc/passwd\n")


def test_module_entry_point_runs(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run([sys.executable, "-m", "merit_jax.data.download", "ptbxl",
                         f"--target_dir={tmp_path}", "--base_url=http://127.0.0.1:9/"],
                        cwd=repo, capture_output=True, text=True, timeout=120)
  # Nothing listens on port 9: a clear error and a non-zero exit, no traceback.
  assert proc.returncode == 1
  assert "could not fetch the checksum list http://127.0.0.1:9/SHA256SUMS.txt" in proc.stderr
  assert "Traceback" not in proc.stderr
