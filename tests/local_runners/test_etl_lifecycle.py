"""The local Glue job's life cycle on real Spark: the session is stopped when the ETL step
ends (its JVM's memory back before training; ``etl.keep_spark`` keeps it), and a job
running past its Glue ``Timeout`` has its Spark jobs cancelled and ends as TIMEOUT."""
from __future__ import annotations

import logging
import textwrap
import threading
import time

import pytest

from harness import uris
from harness.config import load_config
from harness.errors import StepFailed
from harness.stages import GLUE_JOBS, StageContext
from local_runners import etl as etl_module
from local_runners import spark_session
from local_runners.etl import LocalEtlRunner

pytestmark = pytest.mark.slow

QUICK = "from pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate().range(10).count()\n"
ENDLESS = textwrap.dedent("""
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.getOrCreate()
    spark.sparkContext.parallelize(range(10**10), 2).map(lambda x: x * 2).sum()
""")


def run_job(tmp_path, source: str, job_extra: dict | None = None, **overrides):
    script = tmp_path / "job.py"
    script.write_text(source)
    job = {"Name": "job", "Command": {"ScriptLocation": uris.file_uri(script)},
           **(job_extra or {})}
    ctx = StageContext(run_id="r", step="etl", config=load_config(overrides=overrides),
                       log=logging.getLogger("test.etl"), announce=lambda m: None,
                       registry={GLUE_JOBS: {"job": job}})
    return LocalEtlRunner().run({"JobName": "job", "Arguments": {}}, ctx)


def test_the_session_is_stopped_when_the_step_ends_unless_kept(tmp_path):
    out = run_job(tmp_path, QUICK)
    assert out["JobRunState"] == "SUCCEEDED"
    with spark_session._lock:  # the stop runs in the background; wait for it
        pass
    for thread in [t for t in threading.enumerate() if t.name == "spark-stop-later"]:
        thread.join(60)
    assert spark_session._session is None and spark_session._jvm is None  # JVM gone
    run_job(tmp_path, QUICK, **{"etl.keep_spark": True})
    try:
        assert spark_session._session is not None
    finally:
        spark_session.stop_spark()


def test_a_job_past_its_timeout_is_cancelled_and_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(etl_module, "SECONDS_PER_MINUTE", 4.0)  # Timeout 1 -> 4 s
    started = time.monotonic()
    with pytest.raises(StepFailed, match=r"TIMEOUT: it ran longer than its Timeout of 1 "
                                         r"minutes") as e:
        run_job(tmp_path, ENDLESS, {"Timeout": 1})
    assert time.monotonic() - started < 60
    assert "etl.timeout_minutes" in str(e.value.hint or e.value)
    for thread in [t for t in threading.enumerate() if t.name == "spark-stop-later"]:
        thread.join(60)
    assert spark_session._session is None


def test_the_first_cause_of_a_spark_error_is_found():
    from local_runners.etl import root_cause

    java = ("An error occurred while calling o53.parquet.\n"
            ": org.apache.spark.SparkException: Job aborted.\n"
            "\tat org.apache.spark.sql...\n"
            "Caused by: org.apache.spark.SparkException: Task failed while writing rows.\n"
            "Caused by: java.io.FileNotFoundException: File file:/runs/r1/raw does not exist\n"
            "\tat org.apache.hadoop.fs...")
    assert root_cause(java) == "java.io.FileNotFoundException: File file:/runs/r1/raw " \
                               "does not exist"
    task = ("Job aborted due to stage failure: Task 0 in stage 1.0 failed 4 times, most "
            "recent failure: Lost task 0.3 in stage 1.0 (TID 5) (127.0.0.1 executor 0): "
            "java.io.IOException: No space left on device")
    assert root_cause(task) == "java.io.IOException: No space left on device"
    assert root_cause("ValueError: bad value") is None
