"""One local SparkSession per process, configured like a quiet, fast-starting Glue driver.

The Glue script gets its session with ``SparkSession.builder.getOrCreate()``; on the local
backend this module has created that session first, so the script picks it up.
"""
from __future__ import annotations

import atexit
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config import PipelineConfig
from harness.java import ensure_java

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_lock = threading.Lock()
_session: "SparkSession | None" = None
_scratch: tempfile.TemporaryDirectory | None = None

# Only errors from the JVM reach the console; Spark's start-up banner and warnings do not.
_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.spark.name = org.apache.spark
logger.spark.level = error
logger.parquet.name = org.apache.parquet
logger.parquet.level = error
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = error
"""


def _scratch_dir() -> Path:
    global _scratch
    if _scratch is None:
        _scratch = tempfile.TemporaryDirectory(prefix="mlharness-spark-")
    return Path(_scratch.name)


def spark_conf(cfg: PipelineConfig) -> dict[str, str]:
    """The Spark settings of the local session (exposed for tests and the docs)."""
    scratch = _scratch_dir()
    log4j = scratch / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    java_opts = f"-Dlog4j.configurationFile=file:{log4j} -XX:+UseParallelGC"
    return {
        "spark.master": cfg.etl.spark_master,
        "spark.app.name": f"mlharness-{cfg.etl.job_name}",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(cfg.etl.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.catalogImplementation": "in-memory",  # no Hive metastore
        "spark.sql.warehouse.dir": str(scratch / "warehouse"),
        "spark.local.dir": str(scratch / "local"),
        "spark.driver.memory": "2g",
        "spark.driver.extraJavaOptions": java_opts,
        "spark.sql.parquet.enableNestedColumnVectorizedReader": "true",
        # Glue writes Parquet with snappy; keep the same default locally.
        "spark.sql.parquet.compression.codec": "snappy",
    }


def get_spark(cfg: PipelineConfig) -> "SparkSession":
    """Return the process's SparkSession, starting it on first use."""
    global _session
    with _lock:
        if _session is not None and _session.sparkContext._jsc is not None:
            # runtime SQL settings follow the config of the caller
            _session.conf.set("spark.sql.shuffle.partitions", str(cfg.etl.shuffle_partitions))
            return _session
        os.environ["JAVA_HOME"] = ensure_java()
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        from pyspark.sql import SparkSession

        builder = SparkSession.builder
        for key, value in spark_conf(cfg).items():
            builder = builder.config(key, value)
        _session = builder.getOrCreate()
        _session.sparkContext.setLogLevel("ERROR")
        atexit.register(stop_spark)
        return _session


def stop_spark() -> None:
    """Stop the session (if any) and remove its scratch directory."""
    global _session, _scratch
    with _lock:
        if _session is not None:
            _session.stop()
            _session = None
        if _scratch is not None:
            _scratch.cleanup()
            _scratch = None
