"""The etl step on real local Spark: the default pipeline's Glue StartJobRun request, the
Glue job registered as a local run registers it, run by LocalEtlRunner."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from harness.stages import GLUE_JOBS
from pipeline_support import glue_jobs, pipeline, request, run_document, stage_code, stage_context

from harness import uris
from harness.config import PROJECT_ROOT
from harness.errors import StepFailed
from local_runners.etl import LocalEtlRunner
from local_runners.prepare import LocalPrepareRunner
from local_runners.spark_session import get_spark

pytestmark = pytest.mark.slow
SCRIPT = PROJECT_ROOT / "glue_etl" / "mnist_etl.py"
# etl.keep_spark: these tests read the ETL's output with the same session afterwards
# (the session stopping after the step: tests/local_runners/test_etl_lifecycle.py)
CFG, WF = pipeline(**{"data.source": "fixture", "etl.keep_spark": True})


@pytest.fixture(scope="module")
def spark():
    return get_spark(CFG)


def make_ctx(step: str = "etl"):
    """The etl step's context: the pipeline's Glue job registered with the project's script
    as its ScriptLocation (a run registers it with the copy staged under <base>/code)."""
    job = WF.step("etl").job_definition(uris.file_uri(SCRIPT))
    return stage_context(CFG, step, registry={GLUE_JOBS: {job["Name"]: job}})


def start_job_run(base: Path, h: int, w: int, k: int, job: str | None = None) -> dict:
    """The pipeline's StartJobRun request for a run in ``base``: raw data from
    ``<base>/data/raw``, processed data to ``<base>/data/processed``."""
    req = request(WF, "etl", run_document(uris.file_uri(base), prepared={
        "ImageHeight": h, "ImageWidth": w, "NumClasses": k}))
    if job is not None:
        req["JobName"] = job
    return req


def write_raw(raw: Path, split: str, labels: list, pixels: list) -> None:
    (raw / split).mkdir(parents=True, exist_ok=True)
    table = pa.table({"label": pa.array(labels, pa.int32()),
                      "pixels": pa.array(pixels, pa.list_(pa.int32()))})
    pq.write_table(table, raw / split / "part-00000.parquet")


def rows_of(files: list[Path]) -> list[tuple[int, bytes]]:
    """The rows of Parquet files as a sorted list of (label, pixel bytes)."""
    table = pq.read_table([str(f) for f in files])
    pixels = table.column("pixels").combine_chunks()
    x = pixels.flatten().to_numpy().reshape(len(table), -1)
    return sorted(zip(table.column("label").to_pylist(), (row.tobytes() for row in x)))


def left_behind(base: Path) -> list[str]:
    """What a failed job left under ``base`` besides the raw data (``data/`` itself may
    be there: the output's parent)."""
    return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                  if p != base / "data" and "raw" not in p.relative_to(base).parts)


@pytest.fixture(scope="module")
def pipeline_run(spark, tmp_path_factory):
    """prepare (bundled sample) -> etl, once for the module, as a local run does it: the
    code staged under <base>/code, the Glue job registered from the step's CreateJob."""
    base = tmp_path_factory.mktemp("run")
    base_uri = uris.file_uri(base)
    doc = run_document(base_uri)
    prepared = LocalPrepareRunner().run(request(WF, "prepare", doc),
                                        stage_context(CFG, "prepare"))
    doc["Prepare"] = prepared
    jobs = glue_jobs(CFG, WF, stage_code(CFG, WF, base_uri, "etl"))
    assert jobs["mnist-etl"]["Command"]["ScriptLocation"] == \
        uris.join(base_uri, "code", "etl", "mnist_etl.py")
    req = request(WF, "etl", doc)
    out = LocalEtlRunner().run(req, stage_context(CFG, "etl", registry={GLUE_JOBS: jobs}))
    return base, prepared, req, out


def test_prepare_output_is_read_by_spark_as_array_of_int(spark, pipeline_run):
    base, prepared, _, _ = pipeline_run
    assert prepared["RawUri"] == uris.join(uris.file_uri(base), "data", "raw")
    schema = spark.read.parquet(uris.join(prepared["RawUri"], "train")).schema
    assert schema["label"].dataType.simpleString() == "int"
    assert schema["pixels"].dataType.simpleString() == "array<int>"


def test_etl_normalises_every_prepared_row(spark, pipeline_run):
    base, prepared, request, out = pipeline_run
    processed = uris.join(uris.file_uri(base), "data", "processed")
    assert out["JobRunState"] == "SUCCEEDED" and out["JobName"] == "mnist-etl"
    assert out["Id"].startswith("jr_") and out["OutputUri"] == processed
    assert out["Arguments"] == request["Arguments"]
    assert request["Arguments"]["--image_height"] == "28"  # from the prepare step's output
    assert out["GlueVersion"] == CFG.etl.glue_version
    assert out["StartedOn"] <= out["CompletedOn"] and isinstance(out["ExecutionTime"], int)
    for split, n in prepared["Counts"].items():
        assert out["Report"][split] == {"rows_in": n, "rows_out": n, "dropped_null": 0,
                                        "dropped_wrong_size": 0, "dropped_pixel_range": 0,
                                        "dropped_label_range": 0}
        df = spark.read.parquet(uris.join(processed, split))
        assert df.schema["pixels"].dataType.simpleString() == "array<float>"
        assert df.schema["label"].dataType.simpleString() == "int"
        stats = df.selectExpr("count(*) n", "min(size(pixels)) smin", "max(size(pixels)) smax",
                              "min(array_min(pixels)) pmin", "max(array_max(pixels)) pmax",
                              "min(label) lmin", "max(label) lmax").first()
        assert stats.n == n and stats.smin == stats.smax == 784
        assert 0.0 <= stats.pmin and stats.pmax <= 1.0 and stats.pmax > 0.99
        assert stats.lmin == 0 and stats.lmax == 9


def test_etl_values_are_raw_over_255(pipeline_run):
    base, prepared, _, _ = pipeline_run
    raw = pq.read_table(uris.local_path(prepared["RawUri"]) / "validation")
    done = pq.read_table(base / "data" / "processed" / "validation")
    key = lambda t: sorted(zip(t.column("label").to_pylist(),  # noqa: E731
                               [tuple(p) for p in t.column("pixels").to_pylist()]))
    raw_rows = key(raw)
    out_rows = key(done)
    assert len(raw_rows) == len(out_rows) == 500
    for (l1, p1), (l2, p2) in zip(raw_rows[:50], out_rows[:50]):
        assert l1 == l2
        np.testing.assert_allclose(np.array(p1) / 255.0, np.array(p2), rtol=1e-6)


def test_etl_writes_a_report_and_nothing_else(pipeline_run):
    base, _, _, _ = pipeline_run
    out_dir = base / "data" / "processed"
    assert sorted(p.name for p in out_dir.iterdir()) == ["_report", "test", "train", "validation"]
    assert not [p for p in out_dir.parent.iterdir() if ".tmp-" in p.name]
    assert len(list((out_dir / "_report").glob("part-*.json"))) == 1


def test_rows_per_file_caps_the_part_files_and_reruns_are_identical(pipeline_run, tmp_path):
    """etl.rows_per_file travels as the job's --rows_per_file (Spark's maxRecordsPerFile):
    a small value writes more part files, none fuller than it, with the same rows; a rerun
    counts the same for the step cache (part names without the write's UUID)."""
    from harness.step_cache import content_digest

    base, prepared, default_request, _ = pipeline_run
    assert default_request["Arguments"]["--rows_per_file"] == "10000"  # the default
    _, small = pipeline(**{"data.source": "fixture", "etl.keep_spark": True,
                           "etl.rows_per_file": 150})
    digests = []
    for run in ("a", "b"):
        doc = run_document(uris.file_uri(tmp_path / run))
        doc["Prepare"] = prepared  # the module run's raw data
        req = request(small, "etl", doc)
        assert req["Arguments"]["--rows_per_file"] == "150"
        out = LocalEtlRunner().run(req, make_ctx())
        assert out["JobRunState"] == "SUCCEEDED"
        digests.append({split: content_digest(tmp_path / run / "data" / "processed" / split)
                        for split in prepared["Counts"]})
    for split, n in prepared["Counts"].items():
        before = sorted((base / "data" / "processed" / split).glob("part-*.parquet"))
        after = sorted((tmp_path / "a" / "data" / "processed" / split).glob("part-*.parquet"))
        sizes = [pq.ParquetFile(f).metadata.num_rows for f in after]
        assert len(after) >= -(-n // 150) and len(after) > len(before) and max(sizes) <= 150
        assert sum(sizes) == n and rows_of(after) == rows_of(before)
    assert digests[0] == digests[1]


def test_malformed_rows_are_dropped_and_counted(spark, tmp_path, caplog):
    raw, out = tmp_path / "data" / "raw", tmp_path / "data" / "processed"
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
    ctx = make_ctx()
    with caplog.at_level(logging.INFO, logger=ctx.log.name):
        result = LocalEtlRunner().run(start_job_run(tmp_path, 2, 2, 3), ctx)
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
    raw = tmp_path / "data" / "raw"
    write_raw(raw, "train", labels=[0, 1], pixels=[[0, 0, 0, 0], [1, 1, 1, 1]])
    write_raw(raw, "validation", labels=[5], pixels=[[0, 0, 0, 0]])  # label out of range
    write_raw(raw, "test", labels=[0], pixels=[[0, 0, 0, 0]])
    with pytest.raises(StepFailed) as e:
        LocalEtlRunner().run(start_job_run(tmp_path, 2, 2, 2), make_ctx())
    msg = str(e.value)
    assert "split 'validation' has no valid rows" in msg and "dropped_label_range=1" in msg
    assert e.value.step == "etl" and "mnist_etl.py" in msg
    assert left_behind(tmp_path) == []


def test_missing_raw_input_is_a_clear_error(spark, tmp_path):
    with pytest.raises(StepFailed) as e:
        LocalEtlRunner().run(start_job_run(tmp_path, 28, 28, 10), make_ctx())
    msg = str(e.value)
    assert "cannot read raw split 'train'" in msg and f"{tmp_path}/data/raw/train" in msg
    assert left_behind(tmp_path) == []  # no output, no temporary directory


def test_unknown_job_name(tmp_path):
    with pytest.raises(StepFailed) as e:
        LocalEtlRunner().run(start_job_run(tmp_path, 28, 28, 10, job="no-such-job"),
                             make_ctx())
    msg = str(e.value)
    assert "'no-such-job' is not defined" in msg and "mnist-etl" in msg and "JobName" in msg
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused(tmp_path):
    processed = tmp_path / "data" / "processed"
    processed.mkdir(parents=True)
    (processed / "keep.txt").write_text("earlier run")
    with pytest.raises(StepFailed, match="already exists"):
        LocalEtlRunner().run(start_job_run(tmp_path, 2, 2, 2), make_ctx())
    assert (processed / "keep.txt").read_text() == "earlier run"
