"""The local step cache (harness/step_cache.py): a step whose request, input contents,
code and versions match a finished step of an earlier run is reused from it; change any
of them and it runs again; a deleted artifact makes it run again, never fail.

Two cacheable stand-in kinds: ``copy`` reads an input file (and a "script" file, its
code) and writes an output folder; ``sum`` reads that folder (tests/cache_fakes.py).
Each counts its runs."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cache_fakes import RUNS, Copy, Sum

from harness import uris
from harness.config import load_config
from harness.steps import Chain, Gate
from harness.workflow import Workflow, run_path

ROOT = Path(__file__).resolve().parents[2]


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


def test_spark_output_counts_by_its_rows_not_its_bytes_or_part_names(tmp_path):
    """parquet-mr writes the same rows as different bytes (the order of a column's
    encodings varies) under a new UUID each write: the digest sees the same content."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.step_cache import content_digest

    table = pa.table({"label": [1, 2, 3], "pixels": [[0.0, 0.5], [1.0, 0.25], [0.1, 0.2]]})
    uuid_a, uuid_b = "8033f8a7-87be-4fc2-9b50-eb4b3276fdd7", "d86afdb3-b6f7-42fd-966a-9899e1734f3a"
    a, b, c = (tmp_path / n / "train" for n in "abc")
    for folder in (a, b, c):
        folder.mkdir(parents=True)
        (folder / "_SUCCESS").write_bytes(b"")
    pq.write_table(table, a / f"part-00000-{uuid_a}-c000.snappy.parquet", compression="snappy")
    pq.write_table(table, b / f"part-00000-{uuid_b}-c000.snappy.parquet", compression="zstd")
    assert (a / f"part-00000-{uuid_a}-c000.snappy.parquet").read_bytes() != \
        (b / f"part-00000-{uuid_b}-c000.snappy.parquet").read_bytes()
    assert content_digest(a.parent) == content_digest(b.parent)
    # one value changed, or another part number: another digest
    changed = table.set_column(0, "label", pa.array([1, 2, 4]))
    pq.write_table(changed, c / f"part-00000-{uuid_a}-c000.snappy.parquet")
    assert content_digest(c.parent) != content_digest(a.parent)
    (c / f"part-00000-{uuid_a}-c000.snappy.parquet").rename(
        c / f"part-00001-{uuid_a}-c000.snappy.parquet")
    pq.write_table(table, c / f"part-00001-{uuid_a}-c000.snappy.parquet")
    assert content_digest(c.parent) != content_digest(a.parent)
    # a file that is not Parquet inside counts by its bytes
    (a / "notes.parquet").write_bytes(b"not parquet")
    (b / "notes.parquet").write_bytes(b"not parquet!")
    assert content_digest(a.parent) != content_digest(b.parent)


def test_a_parquet_file_counts_the_same_whatever_its_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.step_cache import _DIGEST_ROWS, content_digest

    n = 2 * _DIGEST_ROWS + 123  # a remainder past the last whole slice
    table = pa.table({"label": pa.array(np.arange(n) % 10, pa.int32()),
                      "pixels": pa.array([[float(i % 7), 0.5] for i in range(n)])})
    for name, group in (("a", 1000), ("b", n), ("c", 4096)):
        (tmp_path / name).mkdir()
        pq.write_table(table, tmp_path / name / "part-00000.parquet", row_group_size=group)
    assert content_digest(tmp_path / "a") == content_digest(tmp_path / "b") == \
        content_digest(tmp_path / "c")
    (tmp_path / "d").mkdir()  # the last row changed
    last = pa.table({"label": pa.array([3], pa.int32()), "pixels": pa.array([[0.0, 0.5]])})
    pq.write_table(pa.concat_tables([table.slice(0, n - 1), last]),
                   tmp_path / "d" / "part-00000.parquet")
    assert content_digest(tmp_path / "d") != content_digest(tmp_path / "a")


def test_the_digest_of_a_parquet_file_needs_no_more_memory_when_the_file_grows(tmp_path):
    """In a fresh process each (Arrow's peak allocation counts from its start): a file
    of 4x the rows (same row groups) digests within about the same Arrow memory, where
    reading it whole needs about twice as much (measured: 144 -> 163 MB; whole 248 ->
    447 MB). At 700,000 images a whole read took 5.4 GiB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for rows in (12_000, 48_000):  # random pixels: Snappy cannot shrink them
        pixels = rng.random((rows, 784), dtype=np.float32)
        (tmp_path / str(rows)).mkdir()
        pq.write_table(pa.table({"pixels": pa.FixedSizeListArray.from_arrays(
            pixels.ravel(), 784).cast(pa.list_(pa.float32()))}),
            tmp_path / str(rows) / "part-0.parquet", row_group_size=6_000)
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        import pyarrow as pa
        import pyarrow.parquet as pq
        from harness.step_cache import content_digest
        if sys.argv[1] == "digest":
            content_digest(Path(sys.argv[2]))
        else:
            pq.read_table(Path(sys.argv[2]))
        print(pa.default_memory_pool().max_memory())
    """)

    def peak(mode: str, rows: int) -> int:
        out = subprocess.run([sys.executable, "-c", code, mode, str(tmp_path / str(rows))],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split()[-1])

    assert peak("whole", 48_000) > 1.5 * peak("whole", 12_000)  # the measure sees it
    small, large = peak("digest", 12_000), peak("digest", 48_000)
    assert large < 1.3 * small, (small, large)  # measured: 1.13x
