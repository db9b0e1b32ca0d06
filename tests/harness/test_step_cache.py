"""The local step cache (harness/step_cache.py): a step whose request, input contents,
code and versions match a finished step of an earlier run is reused from it; change any
of them and it runs again; a deleted artifact makes it run again, never fail.

Two cacheable stand-in kinds: ``copy`` reads an input file (and a "script" file, its
code) and writes an output folder; ``sum`` reads that folder (tests/cache_fakes.py).
Each counts its runs."""
import pytest
from cache_fakes import RUNS, Copy, Sum

from harness import uris
from harness.config import load_config
from harness.steps import Chain, Gate
from harness.workflow import Workflow, run_path

@pytest.fixture
def env(tmp_path):
    RUNS.clear()
    (tmp_path / "in.txt").write_text("2")
    (tmp_path / "script.py").write_text("print('v1')\n")
    return tmp_path


def run(env, factor=3, **overrides):
    copy = Copy("copy", source=env / "in.txt", script=env / "script.py", factor=factor)
    total = Sum("sum", folder=copy.output()["Folder"])
    gate = Gate("gate", json_uri=run_path("result", "r.json"), metric="value", threshold=0)
    wf = Workflow("cached", Chain([copy, total, gate]))
    cfg = load_config(overrides={"runs_dir": str(env / "runs"), **overrides})
    return wf.run("local", config=cfg)


def statuses(result):
    return {s.name: (s.status, s.reused_from) for s in result.record.steps}


def test_an_unchanged_rerun_reuses_every_cacheable_step_and_its_files(env):
    first = run(env)
    second = run(env)
    assert RUNS == ["copy", "sum"]  # nothing ran the second time
    old = first.record.run_id
    assert statuses(second) == {"copy": ("REUSED", old), "sum": ("REUSED", old),
                                "gate": ("SUCCEEDED", None)}
    # the outputs name the new run's own (linked) files, and they are there
    folder = second.output("copy")["Folder"]
    assert folder == uris.file_uri(second.run_dir / "copied")
    assert (second.run_dir / "copied" / "value.txt").read_text() == "6.0"
    assert second.output("gate")["Body"] == {"value": 6.0}
    assert (first.run_dir / "copied" / "value.txt").read_text() == "6.0"  # untouched


@pytest.mark.parametrize("change, reran", [
    ("data", ["copy", "sum"]),          # the input file's content
    ("script", ["copy"]),               # one byte of the code (same result: sum cached)
    ("config", ["copy", "sum"]),        # a request value
    ("version", ["copy", "sum"]),       # TensorFlow / Spark / Python version
])
def test_each_input_that_matters_makes_the_step_run_again(env, monkeypatch, change, reran):
    run(env)
    RUNS.clear()
    factor = 3
    if change == "data":
        (env / "in.txt").write_text("5")
    elif change == "script":
        (env / "script.py").write_text("print('v2')\n")
    elif change == "config":
        factor = 4
    else:
        from harness import step_cache
        monkeypatch.setattr(step_cache, "versions",
                            lambda: {"python": "3.11", "tensorflow": "9.9", "pyspark": "4.0"})
    again = run(env, factor=factor)
    assert RUNS == reran
    assert {s.name for s in again.record.steps if s.status == "SUCCEEDED"} >= set(reran)


def test_a_deleted_artifact_makes_the_step_run_again_never_fail(env):
    first = run(env)
    (first.run_dir / "copied" / "value.txt").unlink()
    (first.run_dir / "copied").rmdir()
    RUNS.clear()
    second = run(env)
    assert RUNS == ["copy"]  # its output is the same content again: sum stays cached
    assert second.record.status == "SUCCEEDED"
    assert (second.run_dir / "copied" / "value.txt").read_text() == "6.0"


def test_the_same_output_content_keeps_later_steps_cached(env):
    """A step that re-ran but wrote the same content leaves what follows cached: inputs
    count by content, not by the run's path."""
    first = run(env)
    RUNS.clear()
    second = run(env, **{"cache.skip_steps": ["copy"]})
    assert RUNS == ["copy"]
    assert statuses(second)["sum"] == ("REUSED", first.record.run_id)


def test_no_cache_runs_everything_and_an_unknown_step_is_an_error(env):
    run(env)
    RUNS.clear()
    run(env, **{"cache.enabled": False})
    assert RUNS == ["copy", "sum"]
    from harness.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        run(env, **{"cache.skip_steps": ["nope"]})
    assert "--no-cache-step" in str(e.value) and "copy" in str(e.value)
