"""The ETL on a real Spark standalone cluster: a master and one worker started on loopback
from the installed pyspark (``spark-class ...Master`` / ``...Worker``, as the README tells
a user to), ``etl.spark_master: spark://127.0.0.1:PORT`` with the cluster settings from
the config; the Glue script runs there and writes the same splits."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from harness.stages import GLUE_JOBS
from pipeline_support import glue_jobs, pipeline, request, run_document, stage_code, stage_context

from harness import uris
from local_runners.etl import LocalEtlRunner
from local_runners.prepare import LocalPrepareRunner
from local_runners.spark_session import get_spark, spark_conf, stop_spark

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import pyspark

    from harness.java import ensure_java

    tmp = tmp_path_factory.mktemp("cluster")
    home = Path(pyspark.__file__).resolve().parent
    env = {**os.environ, "JAVA_HOME": ensure_java(), "SPARK_HOME": str(home),
           "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(tmp)}
    spark_class = str(home / "bin" / "spark-class")
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("master", "worker")}
    procs = [subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(free_port())],
        env=env, stdout=logs["master"], stderr=subprocess.STDOUT)]
    try:
        wait_for(lambda: _accepts(port), f"the master on {url}")
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
             "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
             "--work-dir", str(tmp / "work")],
            env=env, stdout=logs["worker"], stderr=subprocess.STDOUT))
        wait_for(lambda: "Registering worker" in (tmp / "master.log").read_text(),
                 "the worker registered with the master")
        yield url, tmp / "work"
    finally:
        stop_spark()  # the next test's session is a local one again
        for proc in procs:
            tree = [proc, *psutil.Process(proc.pid).children(recursive=True)]
            for p in tree:
                p.terminate()
            psutil.wait_procs(tree, timeout=20)
        for f in logs.values():
            f.close()


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_glue_script_runs_on_a_standalone_cluster(cluster, tmp_path):
    cluster, work = cluster
    cfg, wf = pipeline(**{"data.source": "fixture", "etl.spark_master": cluster,
                          "etl.cores_max": 1, "etl.executor_memory": "768m",
                          "etl.spark_conf": {"spark.network.timeout": "120s"},
                          "etl.keep_spark": True})  # its session is looked at afterwards
    conf = spark_conf(cfg)
    assert conf["spark.master"] == cluster and conf["spark.cores.max"] == "1"
    assert conf["spark.executor.memory"] == "768m"
    assert conf["spark.network.timeout"] == "120s"
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"

    base_uri = uris.file_uri(tmp_path)  # the runs folder: the worker sees the same path
    doc = run_document(base_uri)
    doc["Prepare"] = LocalPrepareRunner().run(request(wf, "prepare", doc),
                                              stage_context(cfg, "prepare"))
    jobs = glue_jobs(cfg, wf, stage_code(cfg, wf, base_uri, "etl"))
    out = LocalEtlRunner().run(request(wf, "etl", doc),
                               stage_context(cfg, "etl", registry={GLUE_JOBS: jobs}))
    assert out["JobRunState"] == "SUCCEEDED"
    assert get_spark(cfg).sparkContext.master == cluster  # it ran on the cluster
    counts = {split: pq.read_table(tmp_path / "data" / "processed" / split).num_rows
              for split in ("train", "validation", "test")}
    assert counts == doc["Prepare"]["Counts"]
    # the worker launched an executor for this application (its work folder says so)
    app = get_spark(cfg).sparkContext.applicationId
    assert (work / app).is_dir() and any((work / app).iterdir())


def test_a_bad_spark_setting_is_named():
    from harness.errors import HarnessError

    cfg, _ = pipeline(**{"etl.spark_conf": {"executor.memory": "1g"}})
    with pytest.raises(HarnessError, match="etl.spark_conf.executor.memory"):
        spark_conf(cfg)
