"""The local SparkSession the Glue script runs on (local_runners/spark_session.py)."""
from __future__ import annotations

import pytest

from harness.config import PipelineConfig
from local_runners.spark_session import get_spark

pytestmark = pytest.mark.slow


def test_local_session_is_quiet_and_bound_to_localhost():
    spark = get_spark(PipelineConfig())
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
