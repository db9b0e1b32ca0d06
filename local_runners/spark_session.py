"""One local SparkSession per process, configured like a quiet, fast-starting Glue driver.

The Glue script gets its session with ``SparkSession.builder.getOrCreate()``; on the local
backend this module has created that session first, so the script picks it up.

The JVM is this module's child process and never outlives it: PySpark starts it with
SIGINT ignored, so an interrupted start-up (or one that fails) would leave it running,
re-parented to PID 1. ``get_spark`` therefore kills what it launched when start-up does not
complete, and ``stop_spark`` stops the session and then makes sure the JVM has exited.
While a session is up, Ctrl-C raises KeyboardInterrupt (and cancels the running jobs from
another thread); ``interrupt_count`` lets a caller tell an error caused by an interrupt
(the job failing because its Python workers got the SIGINT too) from a real one.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import psutil

from harness.config import PipelineConfig
from harness.errors import HarnessError
from harness.java import ensure_java

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Re-entrant: stop_spark may run from a KeyboardInterrupt raised inside get_spark.
_lock = threading.RLock()
_session: "SparkSession | None" = None
_jvm: psutil.Process | None = None  # the session's JVM (spark-submit exec'd into java)
_scratch: tempfile.TemporaryDirectory | None = None
_sigint_before: object = None       # the SIGINT handler to restore when the session stops
_interrupts = 0                     # SIGINTs received while a session was up
_atexit_registered = False

# How long the session's stop may take, how long the JVM gets to exit by itself once its
# stdin is closed, and how long after SIGTERM it gets before SIGKILL.
STOP_TIMEOUT_S = 20.0
EXIT_GRACE_S = 5.0
TERM_GRACE_S = 3.0

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
    etl = cfg.etl
    conf = {
        "spark.master": etl.spark_master,
        "spark.app.name": f"mlharness-{etl.job_name}",
        "spark.driver.bindAddress": etl.driver_bind_address,
        "spark.driver.host": etl.driver_host,
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
    for key, value in (("spark.executor.memory", etl.executor_memory),
                       ("spark.executor.cores", etl.executor_cores),
                       ("spark.cores.max", etl.cores_max)):
        if value is not None:
            conf[key] = str(value)
    for key, value in etl.spark_conf.items():
        if not key.startswith("spark."):
            raise HarnessError("not a Spark setting", field=f"etl.spark_conf.{key}",
                               expected="a key starting with 'spark.'")
        conf[key] = str(value)
    return conf


def interrupt_count() -> int:
    """How many SIGINTs arrived while a session was up (compare before and after a job)."""
    return _interrupts


def _on_sigint(signum: int, frame) -> None:
    """The SIGINT handler while a session is up. PySpark's own handler cancels the jobs
    with a Py4J call made from inside the main thread's pending Py4J call, and when that
    fails its error replaces the KeyboardInterrupt; here the cancel runs in a thread."""
    global _interrupts
    _interrupts += 1
    session = _session
    if session is not None:
        threading.Thread(target=_cancel_jobs, args=(session,), name="spark-cancel",
                         daemon=True).start()
    raise KeyboardInterrupt


class _SignalKeepingSigint:
    """``pyspark.context``'s view of the ``signal`` module while a session starts: every
    call goes to the real module except installing a SIGINT handler, which is skipped."""

    def __getattr__(self, name: str) -> Any:
        return getattr(signal, name)

    @staticmethod
    def signal(signum: int, handler: Any) -> Any:
        if signum == signal.SIGINT:
            return signal.getsignal(signum)
        return signal.signal(signum, handler)


@contextlib.contextmanager
def _own_sigint_during_start(main: bool) -> Iterator[None]:
    """While a session starts, a Ctrl-C raises KeyboardInterrupt through ``_on_sigint``.
    SparkContext would install PySpark's own handler midway, which makes a Py4J call
    (cancelAllJobs) from inside the start's pending Py4J call, bound to a context that
    may never finish starting. So PySpark's handler is not installed at all:
    ``_on_sigint`` is in place from the start on."""
    if not main:
        yield
        return
    import pyspark.context

    real = pyspark.context.signal
    pyspark.context.signal = _SignalKeepingSigint()  # type: ignore[assignment]
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGINT, previous)
        raise
    finally:
        pyspark.context.signal = real


def _cancel_jobs(session: "SparkSession") -> None:
    with contextlib.suppress(Exception):
        session.sparkContext.cancelAllJobs()


@contextlib.contextmanager
def _interrupts_deferred(restore_sigint: object = None) -> Iterator[None]:
    """Run a clean-up block to its end: a SIGINT arriving within it is recorded and raised
    as KeyboardInterrupt afterwards. On exit the SIGINT handler becomes ``restore_sigint``
    (when given) or the one in place on entry. Only the main thread receives signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    on_entry = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        restore = restore_sigint if restore_sigint is not None else on_entry
        signal.signal(signal.SIGINT, restore if restore is not None else signal.SIG_DFL)
    if received:
        raise KeyboardInterrupt


def _spark_home() -> str:
    import pyspark
    return str(Path(pyspark.__file__).resolve().parent)


def _descendants() -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return {}


def _launched_since(before: dict[int, psutil.Process]) -> list[psutil.Process]:
    """The Spark processes started since ``before`` was taken: descendants running
    spark-submit, spark-class or java from the PySpark installation, or a fork of this
    interpreter not yet replaced by spark-submit (interrupted between fork and exec)."""
    home = _spark_home()
    own = psutil.Process().cmdline()
    found = []
    for pid, proc in _descendants().items():
        if pid in before:
            continue
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if cmdline == own or any(home in arg for arg in cmdline):
            found.append(proc)
    return found


def _terminate(procs: list[psutil.Process]) -> list[psutil.Process]:
    """SIGTERM each process and its descendants (Spark's Python workers), SIGKILL what is
    left after TERM_GRACE_S; return what is still alive after that (nothing, normally)."""
    tree: dict[int, psutil.Process] = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            tree.update({p.pid: p for p in [proc, *proc.children(recursive=True)]})
    for proc in tree.values():
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(list(tree.values()), timeout=TERM_GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _, alive = psutil.wait_procs(alive, timeout=TERM_GRACE_S)
    for proc in alive:
        log.error("Spark process %d survived SIGKILL", proc.pid)
    return alive


def _gateway_process() -> psutil.Process | None:
    """The JVM PySpark launched for the current gateway (None when PySpark attached to an
    existing one through PYSPARK_GATEWAY_PORT, or when there is no gateway)."""
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    if proc is None:
        return None
    try:
        return psutil.Process(proc.pid)
    except psutil.Error:
        return None


def _forget_gateway() -> None:
    """Close PySpark's gateway so that the next session launches a JVM of its own; closing
    the JVM's stdin makes it exit (it exits when its parent's pipe reaches end of file)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    gateway = SparkContext._gateway
    SparkContext._gateway = None
    SparkContext._jvm = None
    SparkContext._active_spark_context = None
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    if gateway is None:
        return
    with contextlib.suppress(Exception):
        gateway.shutdown()
    proc = getattr(gateway, "proc", None)
    if proc is not None and proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def _abandon_start(before: dict[int, psutil.Process]) -> None:
    """Start-up failed or was interrupted: kill every Spark process it launched."""
    procs = {p.pid: p for p in _launched_since(before)}
    jvm = _gateway_process()
    if jvm is not None:
        procs[jvm.pid] = jvm
    _forget_gateway()
    _terminate(list(procs.values()))


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception in one line, without a Java stack trace."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 — str() of a Py4J error asks the JVM
        text = ""
    lines = [line.strip().lstrip(": ") for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("at ")]
    return f"{type(exc).__name__}: " + " ".join(lines[:2])


def get_spark(cfg: PipelineConfig) -> "SparkSession":
    """Return the process's SparkSession, starting it on first use."""
    global _session, _jvm, _sigint_before, _atexit_registered
    with _lock:
        if _session is not None and _session.sparkContext._jsc is not None:
            if _session.sparkContext.master != cfg.etl.spark_master:
                log.info("Spark master changes from %s to %s: a new session",
                         _session.sparkContext.master, cfg.etl.spark_master)
                stop_spark()
            else:
                # runtime SQL settings follow the config of the caller
                _session.conf.set("spark.sql.shuffle.partitions",
                                  str(cfg.etl.shuffle_partitions))
                return _session
        os.environ["JAVA_HOME"] = ensure_java()
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        os.environ.setdefault("SPARK_LOCAL_IP", cfg.etl.driver_bind_address)
        from pyspark.sql import SparkSession

        builder = SparkSession.builder
        for key, value in spark_conf(cfg).items():
            builder = builder.config(key, value)
        main = threading.current_thread() is threading.main_thread()
        sigint_before = signal.getsignal(signal.SIGINT) if main else None
        if sigint_before is _on_sigint:  # the script stopped the session: a new one
            sigint_before = _sigint_before
        before = _descendants()
        try:
            with _own_sigint_during_start(main):
                session = builder.getOrCreate()
                session.sparkContext.setLogLevel("ERROR")
                jvm = _gateway_process()
        except BaseException as e:
            # a Py4J error reads its text from the JVM: read it before the JVM is killed
            problem = None if isinstance(e, KeyboardInterrupt) else _describe(e)
            # SparkContext installed its SIGINT handler, bound to the failed context
            with _interrupts_deferred(restore_sigint=sigint_before):
                _abandon_start(before)
            if problem is None:
                raise
            raise HarnessError(f"Spark did not start: {problem}",
                               hint="check the etl section of the config (spark_master) "
                               "and the Java installation") from None
        _session, _jvm = session, jvm
        if main:
            _sigint_before = sigint_before
            signal.signal(signal.SIGINT, _on_sigint)
        if not _atexit_registered:
            atexit.register(stop_spark)
            _atexit_registered = True
        return session


def _stop_session(session: "SparkSession") -> None:
    """``session.stop()`` in a thread of its own, given STOP_TIMEOUT_S: the main thread's
    Py4J connection may be mid-call (an interrupt arrived during a job) and a wedged JVM
    must not hang the caller; the JVM is killed afterwards if need be."""
    def stop() -> None:
        try:
            session.stop()
        except Exception as e:  # noqa: BLE001 — the JVM is made to exit below anyway
            log.warning("stopping the Spark session failed: %s: %s", type(e).__name__, e)

    stopper = threading.Thread(target=stop, name="spark-stop", daemon=True)
    stopper.start()
    stopper.join(STOP_TIMEOUT_S)
    if stopper.is_alive():
        log.warning("the Spark session did not stop within %.0f s; killing its JVM",
                    STOP_TIMEOUT_S)


def stop_spark() -> None:
    """Stop the session (if any), make sure its JVM has exited, remove the scratch folder.

    Safe to call more than once, with no session, and from a ``finally`` block or an
    interrupt handler: a Ctrl-C during the stop is held back until the JVM is gone."""
    global _session, _jvm, _scratch, _sigint_before
    # put back the SIGINT handler get_spark replaced (unless somebody replaced it since)
    main = threading.current_thread() is threading.main_thread()
    restore = (_sigint_before if main and signal.getsignal(signal.SIGINT) is _on_sigint
               else None)
    with _interrupts_deferred(restore_sigint=restore), _lock:
        session, jvm = _session, _jvm
        _session = _jvm = None
        if main:  # a stop from another thread leaves the handler (and what it replaced)
            _sigint_before = None
        workers: list[psutil.Process] = []  # Spark's Python workers, children of the JVM
        if jvm is not None:
            with contextlib.suppress(psutil.Error):
                workers = jvm.children(recursive=True)
        if session is not None:
            _stop_session(session)
        if session is not None or jvm is not None:
            _forget_gateway()
        if jvm is not None:
            try:
                jvm.wait(EXIT_GRACE_S)
            except psutil.TimeoutExpired:
                log.warning("the Spark JVM (pid %d) did not exit; terminating it", jvm.pid)
                _terminate([jvm])
            except psutil.Error:
                pass
        # the workers exit when the JVM's end of their stdin closes; make sure they did
        _, lingering = psutil.wait_procs(workers, timeout=EXIT_GRACE_S)
        if lingering:
            _terminate(lingering)
        if _scratch is not None:
            with contextlib.suppress(OSError):
                _scratch.cleanup()
            _scratch = None


def stop_spark_in_background() -> threading.Thread:
    """``stop_spark`` in a thread of its own: the caller goes on (the next step starts)
    while the JVM stops. A later ``get_spark`` waits for it (the module lock); the
    SIGINT handler of the session stays until the next start or stop in the main thread
    (it raises KeyboardInterrupt, as Python's own does)."""
    thread = threading.Thread(target=stop_spark, name="spark-stop-later", daemon=True)
    thread.start()
    return thread
