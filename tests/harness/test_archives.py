import hashlib
import tarfile
from pathlib import Path

import pytest

from harness.config import PROJECT_ROOT
from harness.archives import pack_source_dir
from harness.errors import HarnessError
from harness.uris import file_uri

PROJECT_MODEL_DIR = PROJECT_ROOT / "model"


def _names(archive: Path) -> list[str]:
    with tarfile.open(archive, "r:gz") as tar:
        return tar.getnames()


def test_project_model_dir_packs_with_train_py_at_the_root(tmp_path):
    out = pack_source_dir(PROJECT_MODEL_DIR, tmp_path / "code" / "sourcedir.tar.gz")
    names = _names(out)
    assert "train.py" in names and "data.py" in names and "network.py" in names
    assert "requirements.txt" not in names  # the TF training image has pyarrow
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_same_source_gives_same_bytes_and_excludes_caches(tmp_path):
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "train.py").write_text("print('hi')\n")
    (src / "pkg" / "util.py").write_text("X = 1\n")
    (src / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"\0junk")
    (src / "stale.pyc").write_bytes(b"\0junk")
    a = pack_source_dir(src, tmp_path / "a.tar.gz")
    (src / "train.py").touch()  # a new mtime must not change the archive
    b = pack_source_dir(src, file_uri(tmp_path / "b.tar.gz"))
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert _names(a) == ["pkg", "pkg/util.py", "train.py"]
    with tarfile.open(a, "r:gz") as tar:
        assert tar.extractfile("train.py").read() == b"print('hi')\n"
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_content_change_changes_the_archive_and_replaces_it_atomically(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("A = 1\n")
    dest = tmp_path / "sourcedir.tar.gz"
    first = pack_source_dir(src, dest).read_bytes()
    (src / "train.py").write_text("A = 2\n")
    second = pack_source_dir(src, dest).read_bytes()
    assert first != second
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_or_empty_source_dir_is_a_clear_error(tmp_path):
    with pytest.raises(HarnessError, match="source directory not found"):
        pack_source_dir(tmp_path / "nope", tmp_path / "x.tar.gz")
    (tmp_path / "empty" / "__pycache__").mkdir(parents=True)
    with pytest.raises(HarnessError, match="holds no files"):
        pack_source_dir(tmp_path / "empty", tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()
