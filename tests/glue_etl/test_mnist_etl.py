"""The Glue job script itself (glue_etl/mnist_etl.py), outside the local runner: run as
Glue runs it, in a fresh process with the job's arguments."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pipeline_support import pipeline, request, run_document, stage_context

from harness import uris
from harness.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "glue_etl" / "mnist_etl.py"


@pytest.mark.slow
def test_script_runs_standalone_like_glue_without_glue_jars(tmp_path):
    """`python mnist_etl.py --JOB_NAME ... --raw_uri ...` in a fresh process, with the
    pipeline's CreateJob DefaultArguments and StartJobRun Arguments: the script builds its
    own session with getOrCreate() and needs no Glue JVM classes."""
    from local_runners.prepare import LocalPrepareRunner

    cfg, wf = pipeline(**{"data.source": "fixture"})
    doc = run_document(uris.file_uri(tmp_path / "run"))
    prepared = LocalPrepareRunner().run(request(wf, "prepare", doc),
                                        stage_context(cfg, "prepare"))
    doc["Prepare"] = prepared
    etl = wf.step("etl")
    job = etl.job_definition(uris.file_uri(SCRIPT))
    args = {**job["DefaultArguments"], **request(wf, "etl", doc)["Arguments"],
            "--output_uri": uris.file_uri(tmp_path / "out")}
    assert args["--job-language"] == "python" and args["--raw_uri"] == prepared["RawUri"]
    argv = [sys.executable, str(SCRIPT), "--JOB_NAME", job["Name"]]
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


def test_locations_are_read_as_spark_reads_them():
    from glue_etl.mnist_etl import EtlError, spark_uri, split_uri

    assert spark_uri("s3://bucket/runs/r1/data/raw/") == "s3://bucket/runs/r1/data/raw"
    assert spark_uri("file:///tmp/raw") == "file:///tmp/raw"
    assert spark_uri("/tmp/raw/") == "file:///tmp/raw"
    assert split_uri("s3://bucket/raw", "test") == "s3://bucket/raw/test"
    with pytest.raises(EtlError, match="unsupported URI 'gs://b/raw'"):
        spark_uri("gs://b/raw")
