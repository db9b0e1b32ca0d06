"""Spark and interruption: no JVM outlives an interrupted or failed start-up, stop_spark
makes the JVM exit, and a Ctrl-C during a Glue script is an interruption (not a script
failure) that leaves no output behind.

The subprocess tests press Ctrl-C as a terminal does: SIGINT to the whole process group
(the Python driver, the JVM and Spark's Python workers)."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from harness import uris
from harness.config import PROJECT_ROOT, PipelineConfig
from harness.errors import HarnessError, StepFailed
from harness.stages import GLUE_JOBS, StageContext
from local_runners import spark_session
from local_runners.etl import LocalEtlRunner
from local_runners.spark_session import get_spark, stop_spark

SPARK_HOME = str(Path(__import__("pyspark").__file__).resolve().parent)

START_CHILD = textwrap.dedent("""
    import time
    from harness.config import PipelineConfig
    from local_runners.spark_session import get_spark
    get_spark(PipelineConfig())
    print("SESSION UP", flush=True)
    time.sleep(120)
""")

ETL_CHILD = textwrap.dedent("""
    import json, logging, sys
    from pathlib import Path
    import psutil
    from harness import uris
    from harness.config import PipelineConfig
    from harness.stages import GLUE_JOBS, StageContext
    from local_runners.etl import LocalEtlRunner

    out, script = Path(sys.argv[1]), Path(sys.argv[2])
    job = {"Name": "slow", "Command": {"ScriptLocation": uris.file_uri(script)}}
    log = logging.getLogger("etl")  # the step's log, as a run gives it one of its own
    log.addHandler(logging.StreamHandler(sys.__stderr__))
    log.propagate = False
    ctx = StageContext(run_id="r", step="etl", config=PipelineConfig(), log=log,
                       announce=print, registry={GLUE_JOBS: {"slow": job}})
    try:
        LocalEtlRunner().run({"JobName": "slow",
                              "Arguments": {"--output_uri": uris.file_uri(out)}}, ctx)
    except BaseException as e:
        alive = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
        print("RAISED", type(e).__name__, flush=True)
        print("CHILDREN", json.dumps(alive), flush=True)
        print("LEFT", json.dumps(sorted(p.name for p in out.parent.iterdir())), flush=True)
        raise
""")

# A job long enough to be interrupted, run by Python workers (pyspark.daemon).
SLOW_SCRIPT = textwrap.dedent("""
    import sys
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.getOrCreate()
    print("JOB RUNNING", file=sys.__stdout__, flush=True)
    spark.sparkContext.parallelize(range(10**9), 4).map(lambda x: x * 2).sum()
""")


class Child:
    """A Python child in its own process group, its output in a file, and every process
    it ever had below it (a JVM re-parented to PID 1 is no descendant any more)."""

    def __init__(self, tmp_path: Path, code: str, *args: str):
        self.log = tmp_path / "child.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-u", "-c", code, *args],
                                         cwd=PROJECT_ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.seen: dict[int, tuple[psutil.Process, str]] = {}

    def output(self) -> str:
        return self.log.read_text()

    def scan(self) -> None:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return
        for p in kids:
            try:
                self.seen[p.pid] = (p, " ".join(p.cmdline()))
            except psutil.Error:
                pass

    def wait_for(self, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"child exited early:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out:\n{self.output()[-3000:]}"
            self.scan()
            time.sleep(0.01)

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.scan()
            time.sleep(0.01)
        if self.proc.poll() is None:
            self.proc.kill()
            pytest.fail(f"child still running {timeout} s after Ctrl-C:\n{self.output()[-3000:]}")
        return self.proc.returncode

    def java_seen(self) -> list[psutil.Process]:
        return [p for p, cmd in self.seen.values() if "java" in cmd and SPARK_HOME in cmd]

    def survivors(self, within: float) -> list[str]:
        """The processes seen below the child that are still alive after ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            alive = [(p, cmd) for p, cmd in self.seen.values() if _alive(p)]
            if not alive or time.monotonic() > deadline:
                return [f"{p.pid} (parent {_ppid(p)}): {cmd[:150]}" for p, cmd in alive]
            time.sleep(0.1)

    def kill_all(self) -> None:
        for p, _ in self.seen.values():
            if _alive(p):
                p.kill()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ppid(p: psutil.Process) -> int | None:
    try:
        return p.ppid()
    except psutil.Error:
        return None


def _interrupted(child: Child, rc: int) -> None:
    """KeyboardInterrupt semantics: the traceback's last line, and the exit by SIGINT
    CPython uses for an unhandled KeyboardInterrupt."""
    lines = [line for line in child.output().splitlines() if line.strip()]
    assert rc == -signal.SIGINT, child.output()[-3000:]
    assert lines[-1].startswith("KeyboardInterrupt"), child.output()[-3000:]


# ----------------------------------------------------------------------------- subprocesses


def test_ctrl_c_during_start_up_leaves_no_jvm(tmp_path):
    child = Child(tmp_path, START_CHILD)
    try:
        # spark-submit has exec'd into the JVM; it has not yet told PySpark its port
        child.wait_for(lambda: any("org.apache.spark.deploy.SparkSubmit" in cmd
                                   and "bin/java" in cmd for _, cmd in child.seen.values()),
                       timeout=60)
        child.ctrl_c()
        rc = child.wait(timeout=30)
        assert "SESSION UP" not in child.output()
        _interrupted(child, rc)
        assert child.java_seen()
        assert child.survivors(within=5) == []
    finally:
        child.kill_all()


def test_ctrl_c_during_a_glue_job_is_an_interruption(tmp_path):
    script = tmp_path / "slow_job.py"
    script.write_text(SLOW_SCRIPT)
    out = tmp_path / "data" / "processed"
    child = Child(tmp_path, ETL_CHILD, str(out), str(script))
    try:
        child.wait_for(lambda: "JOB RUNNING" in child.output(), timeout=90)
        child.wait_for(lambda: any("pyspark.daemon" in cmd for _, cmd in child.seen.values()),
                       timeout=30)
        time.sleep(0.5)
        child.ctrl_c()
        rc = child.wait(timeout=60)
        text = child.output()
        _interrupted(child, rc)
        assert "RAISED KeyboardInterrupt" in text and "StepFailed" not in text
        # when the runner re-raised, Spark was stopped and the temporary output removed
        assert "CHILDREN []" in text, text[-3000:]
        assert "LEFT []" in text, text[-3000:]
        assert child.java_seen()
        assert child.survivors(within=5) == []
    finally:
        child.kill_all()


# ----------------------------------------------------------------------------- in process
# (each starts Spark in the test process, most of them twice: marked slow)


def _spark_descendants() -> list[psutil.Process]:
    """Spark's processes below this one: spark-submit, the JVM, the pyspark.daemon workers."""
    return [p for p in psutil.Process().children(recursive=True)
            if _alive(p) and "pyspark" in " ".join(_cmdline(p))]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _etl_ctx(script: Path) -> StageContext:
    job = {"Name": "job", "Command": {"ScriptLocation": uris.file_uri(script)}}
    return StageContext(run_id="r", step="etl", config=PipelineConfig(),
                        log=logging.getLogger("test.etl.interrupt"), announce=lambda m: None,
                        registry={GLUE_JOBS: {"job": job}})


@pytest.mark.slow
@pytest.mark.parametrize("ending", [
    'raise RuntimeError("Py4JError: the JVM went away")',   # an error raised while handling it
    "sys.exit(1)",                                           # a script that exits on it
])
def test_interrupt_surfacing_as_another_error_is_an_interruption(tmp_path, ending):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        spark.range(10).write.parquet(sys.argv[sys.argv.index("--output_uri") + 1] + "/x")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            {ending}
    """))
    out = tmp_path / "data" / "processed"
    with pytest.raises(KeyboardInterrupt) as e:
        LocalEtlRunner().run({"JobName": "job", "Arguments": {"--output_uri": uris.file_uri(out)}},
                             _etl_ctx(script))
    assert "interrupted" in str(e.value)
    assert sorted(p.name for p in out.parent.iterdir()) == []   # temporary output removed
    assert _spark_descendants() == []                           # Spark was stopped


@pytest.mark.slow
def test_a_real_script_failure_is_still_a_step_failure(tmp_path):
    script = tmp_path / "job.py"
    script.write_text('raise ValueError("bad column")\n')
    with pytest.raises(StepFailed, match="ValueError: bad column"):
        LocalEtlRunner().run({"JobName": "job", "Arguments": {
            "--output_uri": uris.file_uri(tmp_path / "out")}}, _etl_ctx(script))


@pytest.mark.slow
def test_stop_spark_makes_the_jvm_exit_and_is_idempotent():
    spark = get_spark(PipelineConfig())
    assert spark.sparkContext.parallelize(range(100), 2).map(lambda x: x + 1).sum() == 5050
    jvm = spark_session._jvm
    assert jvm is not None and _alive(jvm)
    assert any("pyspark.daemon" in " ".join(_cmdline(p)) for p in _spark_descendants())
    assert signal.getsignal(signal.SIGINT) is spark_session._on_sigint
    stop_spark()
    assert not _alive(jvm) and _spark_descendants() == []
    assert signal.getsignal(signal.SIGINT) is not spark_session._on_sigint
    stop_spark()  # a second time, and with no session: nothing to do, no error
    # the next session starts a JVM of its own
    again = get_spark(PipelineConfig())
    assert again.range(5).count() == 5
    assert spark_session._jvm is not None and spark_session._jvm.pid != jvm.pid
    stop_spark()
    assert _spark_descendants() == []


@pytest.mark.slow
def test_failed_start_up_leaves_no_jvm():
    stop_spark()
    cfg = PipelineConfig()
    cfg.etl.spark_master = "local[no-such-core-count]"
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(HarnessError, match="Spark did not start.*no-such-core-count"):
        get_spark(cfg)
    assert _spark_descendants() == []
    assert signal.getsignal(signal.SIGINT) is handler  # not PySpark's, bound to a dead context
    assert get_spark(PipelineConfig()).range(3).count() == 3
    stop_spark()


@pytest.mark.slow
def test_ctrl_c_during_stop_is_held_back_until_the_jvm_is_gone(monkeypatch):
    get_spark(PipelineConfig())
    jvm = spark_session._jvm
    real_stop = spark_session._stop_session

    def stop_then_ctrl_c(session):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the stop is under way
        real_stop(session)

    monkeypatch.setattr(spark_session, "_stop_session", stop_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        stop_spark()
    assert not _alive(jvm) and _spark_descendants() == []
    assert spark_session._session is None


@pytest.mark.slow
def test_the_harness_handler_stays_in_place_while_the_session_starts(monkeypatch):
    """PySpark's SparkContext installs its own SIGINT handler midway through the start, one
    that makes a Py4J call (cancelAllJobs) from inside the start's pending call, bound to a
    context that may never finish starting. The harness's handler must be the one in
    place right after the context is made."""
    from pyspark import SparkContext

    stop_spark()
    seen = []
    real = SparkContext.setLogLevel

    def recording(self, level):
        seen.append(signal.getsignal(signal.SIGINT))
        return real(self, level)

    monkeypatch.setattr(SparkContext, "setLogLevel", recording)
    before = signal.getsignal(signal.SIGINT)
    try:
        get_spark(PipelineConfig())
        assert seen and seen[0] is spark_session._on_sigint
        assert signal.getsignal(signal.SIGINT) is spark_session._on_sigint
    finally:
        stop_spark()
    assert signal.getsignal(signal.SIGINT) is before
