"""The code folder's scripts import their siblings only from the folder itself: run (or
imported) as a script, a module missing from the folder -- a ``sourcedir.tar.gz`` or a
processing job's code without it -- fails at once, as it fails in the container; no
fallback to the ``model`` package of the project's own install (which this venv has, so
a fallback would hide the missing file)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parents[2] / "model"


def code_folder(tmp_path: Path, without: str) -> Path:
    folder = tmp_path / "code"
    shutil.copytree(MODEL, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py",
                                                                  without))
    assert not (folder / without).exists() and (folder / "evaluate.py").exists()
    return folder


def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=folder, capture_output=True, text=True,
                          timeout=120)


def test_the_project_s_model_package_is_importable_here():
    # the premise: a fallback to ``model.<module>`` would find the module in this venv
    out = subprocess.run([sys.executable, "-c", "import model.drift_features"], cwd="/",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("script, missing", [("drift_check.py", "drift_plot.py"),
                                             ("drift_check.py", "drift_capture.py")])
def test_a_script_whose_sibling_is_missing_fails(tmp_path, script, missing):
    out = run(code_folder(tmp_path, missing), script, "--help")
    assert out.returncode != 0
    assert f"No module named '{missing[:-3]}'" in out.stderr, out.stderr[-2000:]


def test_a_module_a_script_imports_fails_when_its_sibling_is_missing(tmp_path):
    # drift_baseline is imported by train.py, evaluate's data loader by evaluate.py
    out = run(code_folder(tmp_path, "drift_features.py"), "-c", "import drift_baseline")
    assert "No module named 'drift_features'" in out.stderr, out.stderr[-2000:]
    out = run(code_folder(tmp_path / "e", "data.py"), "-c",
              "import evaluate; evaluate._load_split(__import__('pathlib').Path('test'))")
    assert "No module named 'data'" in out.stderr, out.stderr[-2000:]


def test_with_every_sibling_the_scripts_import(tmp_path):
    folder = code_folder(tmp_path, "no-such-file")
    out = run(folder, "drift_check.py", "--help")
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-2000:]
    out = run(folder, "-c", "import drift_baseline, evaluate")
    assert out.returncode == 0, out.stderr[-2000:]
