"""A source dir's requirements.txt is installed as SageMaker's training container does it
(``pip install -r requirements.txt`` in the source dir before the entry point), into a
cached layer before the framework on the job's path: a local project it names is
importable by the script, a requirement the framework satisfies is not installed again,
the next job reuses the layer without pip, and a requirement pip cannot install fails the
job naming the file and leaves no layer. Offline: pip gets no index
(``PIP_NO_INDEX``) and builds the local project with this venv's setuptools."""
import json
import logging
import time

import pytest
from support import LogLines
from test_train import make_job, write_splits

from harness import uris
from harness.archives import pack_source_dir
from harness.errors import StepFailed
from local_runners import source_requirements as sr
from local_runners.train import LocalTrainingRunner

SCRIPT = """\
import os, sys
import numpy, hello_local
print("greeting", hello_local.GREETING, flush=True)
print("hello_local from", os.path.dirname(os.path.dirname(hello_local.__file__)), flush=True)
print("numpy from", os.path.dirname(os.path.dirname(numpy.__file__)), flush=True)
print("path", os.pathsep.join(sys.path), flush=True)
"""


def local_project(root, version="0.1.0", greeting="hi"):
    """A tiny pip-installable project (setuptools, pyproject.toml) at ``root``."""
    (root / "src" / "hello_local").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "hello-local"\nversion = "{version}"\n'
        'dependencies = ["numpy"]\n')
    (root / "src" / "hello_local" / "__init__.py").write_text(f"GREETING = {greeting!r}\n")


def source_dir(tmp, requirements: str):
    src = tmp / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    local_project(src / "vendor" / "hello_local")
    (src / "requirements.txt").write_text(requirements)
    return src


def run_job(tmp, run_id, src):
    cfg, base, request, ctx = make_job(tmp / run_id, run_id, {"epochs": 1}, stage=False)
    write_splits(base, sizes=(20, 10, 10))
    pack_source_dir(src, uris.local_path(json.loads(
        request["HyperParameters"]["sagemaker_submit_directory"])))
    log = LogLines()
    ctx.log.addHandler(log)
    ctx.log.setLevel(logging.INFO)  # the job's output lines are INFO records
    start = time.monotonic()
    try:
        result = LocalTrainingRunner(prewarm=False).run(request, ctx)
    finally:
        ctx.log.removeHandler(log)
    return result, log.lines, time.monotonic() - start, base


@pytest.fixture
def offline(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLHARNESS_CACHE", str(cache))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")  # pip's inverted flag: isolation off
    return cache / "requirements"


def _value(lines, prefix):
    return next(line[len(prefix):].strip() for line in lines if line.startswith(prefix))


@pytest.mark.slow
def test_requirements_go_into_a_cached_layer_the_next_job_reuses(tmp_path, offline,
                                                                 monkeypatch):
    src = source_dir(tmp_path, "# the job's own dependencies\nnumpy\n./vendor/hello_local\n")
    result, lines, built_s, _ = run_job(tmp_path, "q1", src)
    assert result["TrainingJobStatus"] == "Completed"
    layers = [p for p in offline.iterdir()]
    assert len(layers) == 1 and layers[0].name == sr.layer_key(src)  # no temp folder left
    layer = layers[0]
    assert "greeting hi" in lines
    assert _value(lines, "hello_local from") == str(layer)
    # numpy: satisfied by the framework, so not installed again (it would shadow it)
    assert _value(lines, "numpy from") != str(layer) and not (layer / "numpy").exists()
    path = _value(lines, "path").split(":")
    numpy_site = _value(lines, "numpy from")
    assert path.index(str(layer)) < path.index(numpy_site)
    manifest = json.loads((layer / sr.MANIFEST).read_text())
    assert [(p["name"], p["version"]) for p in manifest["installed"]] == [("hello-local",
                                                                          "0.1.0")]
    assert manifest["satisfied_by_framework"] == ["numpy"]
    assert any(line.startswith("requirements.txt: installed hello-local==0.1.0; already in "
                               "the framework: numpy") for line in lines)

    def no_pip(*args, **kw):
        raise AssertionError("pip ran for a layer that exists")

    monkeypatch.setattr(sr, "_pip", no_pip)
    result, lines, reused_s, _ = run_job(tmp_path, "q2", src)
    assert result["TrainingJobStatus"] == "Completed" and "greeting hi" in lines
    assert any(line.startswith(f"requirements.txt: reusing the layer {layer}") for line in lines)
    assert reused_s < built_s
    assert list(offline.iterdir()) == [layer]


@pytest.mark.slow
def test_a_requirement_pip_cannot_install_fails_the_job_and_leaves_no_layer(tmp_path,
                                                                            offline):
    src = source_dir(tmp_path, "numpy\nno-such-package-mlharness==1.0\n")
    with pytest.raises(StepFailed) as e:
        run_job(tmp_path, "q3", src)
    msg = str(e.value)
    assert "training job mnist-train-q3 failed: InstallRequirementsError:" in msg
    assert "no-such-package-mlharness" in msg  # pip's own last lines
    assert "requirements.txt:" in msg and "pip install -r requirements.txt" in msg
    assert list(offline.iterdir()) == []  # no layer, no half-built folder
    training = tmp_path / "q3" / "training"
    assert not training.exists() or list(training.iterdir()) == []


def test_the_layer_key_follows_the_file_the_projects_it_names_and_python(tmp_path):
    src = source_dir(tmp_path, "numpy\n./vendor/hello_local\n")
    key = sr.layer_key(src)
    assert len(key) == 64 and sr.layer_key(src) == key
    # what pip leaves beside a project it built does not change it ...
    (src / "vendor" / "hello_local" / "build").mkdir()
    (src / "vendor" / "hello_local" / "src" / "hello_local.egg-info").mkdir()
    (src / "vendor" / "hello_local" / "src" / "hello_local.egg-info" / "PKG-INFO").write_text("x")
    assert sr.layer_key(src) == key
    # ... a change to the project does (the same requirements.txt would reuse a stale layer)
    (src / "vendor" / "hello_local" / "src" / "hello_local" / "__init__.py").write_text(
        "GREETING = 'changed'\n")
    changed = sr.layer_key(src)
    assert changed != key
    # so does a file it includes with -r
    (src / "requirements.txt").write_text("numpy\n./vendor/hello_local\n-r more.txt\n")
    (src / "more.txt").write_text("pandas\n")
    with_more = sr.layer_key(src)
    (src / "more.txt").write_text("pandas>=2\n")
    assert len({changed, with_more, sr.layer_key(src)}) == 3


def test_no_requirements_file_no_layer(tmp_path, offline):
    (tmp_path / "train.py").write_text("")
    assert sr.install_layer(tmp_path, "j", logging.getLogger("t")) == []
    assert not offline.exists()
