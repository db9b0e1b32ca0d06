"""The local Glue job's life cycle on real Spark: the session is stopped when the ETL step
ends (its JVM's memory back before training; ``etl.keep_spark`` keeps it), and a job
running past its Glue ``Timeout`` has its Spark jobs cancelled and ends as TIMEOUT."""
from __future__ import annotations

import logging
import textwrap
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
    assert spark_session._session is None
