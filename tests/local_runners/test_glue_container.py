"""etl.runner: glue-container, driven through the real Docker SDK against the fake Docker
engine (tests/fake_docker_engine.py), whose Glue image runs ``spark-submit <script> args``
with this venv's python and local Spark; and without any engine at all. Only
test_spark_jobs_write_their_output starts Spark: the other scripts never touch it."""
from __future__ import annotations

import csv
import logging
import textwrap
import time
from pathlib import Path

import docker.models.containers
import pyarrow.parquet as pq
import pytest
from fake_docker_engine import FakeDockerEngine
from harness.stages import GLUE_JOBS
from pipeline_support import stage_context
from support import TaskUpdates

from harness import uris
from harness.config import PROJECT_ROOT, load_config
from harness.errors import StepFailed
from local_runners.etl import LocalEtlRunner
from local_runners.glue_container import (DEFAULT_IMAGE, container_environment, glue_image,
                                          traceback_error)

CFG = load_config(overrides={"etl.runner": "glue-container"})
WALKTHROUGH = PROJECT_ROOT / "examples" / "reference-walkthrough" / "glue_job.py"
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "AWS_PROFILE")

# Fails or succeeds without Spark: reads its arguments like a Glue script, writes plain files.
NO_SPARK = textwrap.dedent("""\
    import json, os, sys, time
    from awsglue.utils import getResolvedOptions
    args = getResolvedOptions(sys.argv, ["JOB_NAME", "SOURCE_PATH", "output_uri", "MODE"])
    print("job", args["JOB_NAME"], "reads", args["SOURCE_PATH"], flush=True)
    if args["MODE"] == "sleep":
        time.sleep(120)
    if args["MODE"] == "fail":
        raise ValueError("no rows for " + os.path.basename(args["SOURCE_PATH"])
                         + "\\nsecond line")
    rows = open(args["SOURCE_PATH"]).read().split()
    out = args["output_uri"].removeprefix("file://")
    os.makedirs(out + "/_report")
    with open(out + "/_report/part-0.json", "w") as f:
        f.write(json.dumps({"split": "all", "rows_in": len(rows)}) + "\\n")
    print("wrote", out, flush=True)
""")


@pytest.fixture(scope="module")
def engine():
    with FakeDockerEngine() as e:
        yield e


@pytest.fixture
def docker_env(engine, monkeypatch):
    """DOCKER_HOST at the fake engine, the Glue image present, credentials in the host's
    environment (they must not reach the container)."""
    for k in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT", "GLUE_IMAGE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DOCKER_HOST", engine.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAHOSTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
    monkeypatch.setenv("AWS_PROFILE", "host-profile")
    engine.images = {glue_image()}
    engine.pull_error, engine.pull_error_in_stream = None, False
    engine.pulls.clear()
    yield engine
    assert engine.running_containers() == [] and not engine.containers


def run_job(tmp_path: Path, script: Path, arguments: dict, progress=None):
    job = {"Name": "job", "Command": {"Name": "glueetl", "ScriptLocation": uris.file_uri(script)},
           "GlueVersion": "5.1"}
    fields = {"progress": progress} if progress else {}
    ctx = stage_context(CFG, "etl", registry={GLUE_JOBS: {"job": job}}, **fields)
    return LocalEtlRunner().run({"JobName": "job", "Arguments": arguments}, ctx), ctx


def no_spark_job(tmp_path: Path, mode: str) -> tuple[Path, dict, Path]:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "job.py").write_text(NO_SPARK)
    (tmp_path / "in.txt").write_text("a b c\n")
    out = tmp_path / "data" / "processed"
    return code / "job.py", {"--SOURCE_PATH": str(tmp_path / "in.txt"), "--MODE": mode,
                             "--output_uri": uris.file_uri(out)}, out


def test_image_and_environment(monkeypatch):
    monkeypatch.delenv("GLUE_IMAGE", raising=False)
    assert glue_image("5.0") == glue_image("5.1") == DEFAULT_IMAGE \
        == "public.ecr.aws/glue/aws-glue-libs:5"
    monkeypatch.setenv("GLUE_IMAGE", "public.ecr.aws/glue/aws-glue-libs:5.1.0")
    assert glue_image("5.1") == "public.ecr.aws/glue/aws-glue-libs:5.1.0"
    env, hosts = container_environment("eu-west-1", None)
    assert not set(env) & set(CREDENTIALS) and hosts == {}
    env, hosts = container_environment(None, "http://127.0.0.1:5000")
    assert env["AWS_ENDPOINT_URL"] == "http://host.docker.internal:5000"
    assert env["AWS_ACCESS_KEY_ID"] == "testing" and "AWS_PROFILE" not in env
    assert hosts == {"host.docker.internal": "host-gateway"}
    assert traceback_error(["x", "Traceback (most recent call last):", '  File "a.py"',
                            "    raise E", "pkg.E: boom", "more"]) == "pkg.E: boom"
    assert traceback_error(["py4j.protocol.Py4JJavaError: An error occurred"]) \
        == "py4j.protocol.Py4JJavaError: An error occurred"


def test_without_a_docker_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    script, args, out = no_spark_job(tmp_path, "ok")
    with pytest.raises(StepFailed) as err:
        run_job(tmp_path, script, args)
    message = str(err.value)
    assert "no Docker engine answers at DOCKER_HOST=unix:///nonexistent/docker.sock" in message
    assert "public.ecr.aws/glue/aws-glue-libs:5" in message
    assert "etl.runner: glue-compat" in message and "etl.runner: spark" in message
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_pulls_then_runs_and_passes_no_credentials(tmp_path, docker_env, caplog):
    engine = docker_env
    engine.images = set()                      # absent: pulled, with a progress bar
    script, args, out = no_spark_job(tmp_path, "ok")
    progress = TaskUpdates()
    with caplog.at_level(logging.INFO):
        result, _ = run_job(tmp_path, script, args, progress)
    assert engine.pulls == [DEFAULT_IMAGE]
    assert progress.updates[f"docker pull {DEFAULT_IMAGE}"][-1] == (42_000_000, 42_000_000)
    assert result["JobRunState"] == "SUCCEEDED" and result["Report"] == {"all": {"rows_in": 3}}
    assert result["OutputUri"] == uris.file_uri(out) and (out / "_report").is_dir()
    assert [p.name for p in out.parent.iterdir()] == ["processed"]   # no temporary left
    # the container's output, in the step log (the fake image maps paths back to the host)
    assert f"job job reads {tmp_path}/in.txt" in caplog.text
    assert f"wrote {tmp_path}/data/.processed.tmp-" in caplog.text

    body = engine.created[-1]
    host = body["HostConfig"]
    assert not host.get("PortBindings") and not body.get("ExposedPorts")
    assert host.get("NetworkMode") != "host"
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert mounts["/home/hadoop/workspace/src"]["Source"] == str(script.parent)
    assert mounts["/home/hadoop/workspace/src"]["ReadOnly"] is True
    assert mounts["/data/in-0/in.txt"] == {**mounts["/data/in-0/in.txt"], "ReadOnly": True,
                                           "Source": str(tmp_path / "in.txt")}
    assert mounts["/data/out-0"]["Source"] == str(out.parent)
    assert mounts["/data/out-0"]["ReadOnly"] is False and len(mounts) == 3
    env = dict(e.split("=", 1) for e in body["Env"])
    assert not [k for k in env if k in CREDENTIALS or "SECRET" in k or "TOKEN" in k]
    assert not [m for m in mounts if ".aws" in m]
    cmd = body["Cmd"]
    assert cmd[:2] == ["spark-submit", "--master"] and cmd[cmd.index("--JOB_NAME") + 1] == "job"
    assert "/home/hadoop/workspace/src/job.py" in cmd
    assert cmd[cmd.index("--SOURCE_PATH") + 1] == "/data/in-0/in.txt"
    assert cmd[cmd.index("--output_uri") + 1].startswith("file:///data/out-0/.processed.tmp-")
    assert cmd[cmd.index("--JOB_RUN_ID") + 1] == result["Id"]
    assert body["User"] and body["Labels"] == {"mlharness.glue-job-run": result["Id"]}


def test_failing_script(tmp_path, docker_env, caplog):
    script, args, out = no_spark_job(tmp_path, "fail")
    with caplog.at_level(logging.INFO), pytest.raises(StepFailed) as err:
        run_job(tmp_path, script, args)
    e = err.value
    assert e.problem == ("the Glue script job.py failed in the Glue container (exit code 1): "
                         "ValueError: no rows for in.txt")
    assert e.step == "etl" and e.file == str(script)
    assert "last log lines" in e.hint and 'raise ValueError("no rows for "' in e.hint
    assert f"job job reads {tmp_path}/in.txt" in e.hint
    assert "Traceback (most recent call last)" in caplog.text      # the step log has it all
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_ctrl_c_stops_and_removes_the_container(tmp_path, docker_env, monkeypatch):
    engine = docker_env
    script, args, out = no_spark_job(tmp_path, "sleep")
    seen = {}
    real_wait = docker.models.containers.Container.wait

    def interrupted_wait(self, **kw):
        deadline = time.monotonic() + 30
        while "reads" not in engine.containers[self.id].log_path.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        seen["container"] = engine.containers[self.id]
        seen["tmp"] = [p for p in out.parent.iterdir()]
        raise KeyboardInterrupt
    monkeypatch.setattr(docker.models.containers.Container, "wait", interrupted_wait)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_job(tmp_path, script, args)
    monkeypatch.setattr(docker.models.containers.Container, "wait", real_wait)
    c = seen["container"]
    assert c.id in engine.removed and not c.running and c.proc.returncode != 0
    assert time.monotonic() - t0 < 30
    assert [p.name[:len(".processed.tmp-")] for p in seen["tmp"]] == [".processed.tmp-"]
    assert list(out.parent.iterdir()) == []          # the temporary output is gone


PLAIN_SPARK = textwrap.dedent("""\
    import sys
    from awsglue.utils import getResolvedOptions
    from pyspark.sql import SparkSession, functions as F
    args = getResolvedOptions(sys.argv, ["JOB_NAME", "SOURCE_PATH", "output_uri"])
    spark = SparkSession.builder.getOrCreate()
    df = spark.read.csv(args["SOURCE_PATH"], schema="label int, value double")
    df.withColumn("value", F.col("value") / 255).write.parquet(args["output_uri"] + "/train")
    spark.createDataFrame([("train", df.count())], "split string, rows_in long") \\
        .coalesce(1).write.json(args["output_uri"] + "/_report")
""")


def test_spark_jobs_write_their_output(tmp_path, docker_env):
    """The one test that starts Spark (in the fake image): a plain-Spark job and the
    reference walkthrough's GlueContext job (two containers, two JVMs)."""
    code, out = tmp_path / "code", tmp_path / "data" / "processed"
    code.mkdir()
    (code / "plain.py").write_text(PLAIN_SPARK)
    (tmp_path / "rows.csv").write_text("1,255\n2,51\n")
    walk = tmp_path / "walk"
    walk.mkdir()
    pixels = [[(r * 31 + c * 7) % 256 for c in range(4)] for r in range(5)]   # 2x2 images
    (walk / "raw.csv").write_text("".join(",".join(map(str, [r % 10, *p])) + "\n"
                                          for r, p in enumerate(pixels)))
    plain, _ = run_job(tmp_path, code / "plain.py", {
        "--SOURCE_PATH": str(tmp_path / "rows.csv"), "--output_uri": uris.file_uri(out)})
    glue, _ = run_job(walk, WALKTHROUGH, {
        "--SOURCE_PATH": str(walk / "raw.csv"), "--OUTPUT_PATH": uris.file_uri(walk / "processed"),
        "--TRAIN_PREFIX": "train", "--VAL_PREFIX": "validation"})

    assert plain["Report"] == {"train": {"rows_in": 2}}
    assert sorted(p.name for p in out.iterdir()) == ["_report", "train"]
    assert sorted((r["label"], r["value"]) for r in pq.read_table(out / "train").to_pylist()) \
        == [(1, 1.0), (2, 0.2)]

    assert glue["JobRunState"] == "SUCCEEDED" and glue["Report"] == {}
    got = [row for prefix in ("train", "validation")
           for part in sorted((walk / "processed" / prefix).glob("part-*.csv"))
           for row in csv.reader(part.open())]
    assert sorted(int(r[0]) for r in got) == [0, 1, 2, 3, 4]
    assert all(len(r) == 5 and 0.0 <= float(r[1]) <= 1.0 for r in got)
    body = next(b for b in docker_env.created if WALKTHROUGH.name in " ".join(b["Cmd"]))
    mounts = {m["Target"]: m for m in body["HostConfig"]["Mounts"]}
    assert mounts["/home/hadoop/workspace/src"]["Source"] == str(WALKTHROUGH.parent)
    assert mounts["/data/in-0/raw.csv"]["ReadOnly"] is True
    assert mounts["/data/out-0"]["Source"] == str(walk) and not mounts["/data/out-0"]["ReadOnly"]
