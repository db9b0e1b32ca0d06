"""The bridges' worker threads, and how a job they run is stopped.

A bridge runs each emulated job (a Glue job run, a training or processing job) on a worker
thread of this process, with the local runner. When the emulator stops -- the run ended,
failed, or was interrupted (Ctrl-C) -- a job still running must stop too, as SageMaker
and Glue stop the job of a stopped execution. ``Workers.stop`` does, for each job still
running:

1. ``JobStopped`` is raised in its thread (``PyThreadState_SetAsyncExc``): the exception
   arrives at the thread's next Python instruction -- the training or processing script
   runs in this process, in Python, so within moments; a thread blocked in one long C
   call (a Spark action) gets it when that returns, which is why the Glue bridge also
   cancels the Spark jobs (``on_stop``). ``JobStopped`` is a KeyboardInterrupt (the job
   is interrupted because the run was): the runners' ``except Exception`` let it through,
   what they do on an interrupt they do (the ETL runner stops Spark before its temporary
   output goes), and their ``finally`` blocks (the process state a script changed, the
   temporary folders) run as it unwinds;
2. the processes the job started (a processing container's entry point run as a
   subprocess) are found by the marker in their environment (``MARKER_VARIABLE`` = the
   job's ARN, which the bridge puts in the request's ``Environment``) and sent SIGTERM,
   then SIGKILL after ``KILL_AFTER_S`` (SageMaker's StopProcessingJob does the same);
3. the job's ``on_stopped`` sets its status (``Stopped``/``STOPPED``) when its thread ends.

Threads still running after the grace period are named in a warning; they are daemon
threads and end with the process.

``Workers.request_stop`` stops one job the same way (1. and 2.) without waiting for it:
an API's Stop* call (``StopHyperParameterTuningJob``) answers at once, and 3. follows.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

LOG = logging.getLogger("mlharness.emulator.workers")
MARKER_VARIABLE = "MLHARNESS_EMULATOR_JOB"
STOP_GRACE_S = 10.0
KILL_AFTER_S = 2.0


class JobStopped(KeyboardInterrupt):
    """Raised in a bridge's worker thread to stop the job it runs (see the module doc).
    Not an error of the job: an interrupt, so that no ``except Exception`` of a runner
    turns it into a failure."""


@dataclass
class _Worker:
    name: str
    on_stopped: Callable[[], None]
    marker: str | None
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: bool = True  # the job's work has not returned yet
    stop_requested: bool = False


class Workers:
    """The worker threads of one bridge."""

    def __init__(self) -> None:
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return [w.thread for w in self._workers if w.thread is not None]

    def start(self, name: str, work: Callable[[], None], *,
              on_stopped: Callable[[], None], marker: str | None = None) -> threading.Thread:
        """Run ``work`` on a new daemon thread; ``on_stopped`` runs on that thread when the
        job was stopped (``stop``), after ``work`` ended."""
        worker = _Worker(name, on_stopped, marker)

        def body() -> None:
            self._local.worker = worker
            try:
                try:
                    work()
                finally:
                    with worker.lock:
                        worker.active = False
            except KeyboardInterrupt:  # JobStopped, or what a runner raised for it
                if not worker.stop_requested:
                    raise
                LOG.info("%s stopped", name)
            if worker.stop_requested:
                on_stopped()

        worker.thread = threading.Thread(target=body, name=name, daemon=True)
        with self._lock:
            self._workers.append(worker)
        worker.thread.start()
        return worker.thread

    def stop_requested(self) -> bool:
        """Whether the job of the calling worker thread is being stopped (its failure is
        then the stop, not an error of the job)."""
        worker = getattr(self._local, "worker", None)
        return worker is not None and worker.stop_requested

    def join(self, timeout: float | None) -> list[str]:
        """Wait for every worker, ``timeout`` seconds in all; the names still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            if w.thread is not None:
                w.thread.join(None if deadline is None
                              else max(0.0, deadline - time.monotonic()))
        return [w.name for w in workers if w.thread is not None and w.thread.is_alive()]

    def request_stop(self, name: str) -> bool:
        """Stop the job of the worker named ``name`` without waiting for it (a Stop* call
        of the API: it answers at once, the job ends moments later): ``JobStopped`` is
        raised in its thread, its ``on_stopped`` runs when the thread ends. False when no
        such job is still working."""
        with self._lock:
            found = [w for w in self._workers if w.name == name and w.thread is not None
                     and w.thread.is_alive()]
        for w in found:
            with w.lock:
                if not w.active or w.stop_requested:
                    continue
                w.stop_requested = True
                _raise_in(w.thread, JobStopped)
            if w.marker:
                terminate_marked(w.marker)
            return True
        return False

    def stop(self, on_stop: Callable[[], None] | None = None,
             grace_s: float = STOP_GRACE_S) -> list[str]:
        """Stop every job still running (see the module doc); their names. ``on_stop``:
        what else interrupts the bridge's work (called once, when there is a job to stop)."""
        with self._lock:
            running = [w for w in self._workers if w.thread is not None and w.thread.is_alive()]
        stopping = []
        for w in running:
            with w.lock:
                if not w.active:
                    continue
                if not w.stop_requested:  # once: a second one would cut its clean-up short
                    w.stop_requested = True
                    _raise_in(w.thread, JobStopped)
            stopping.append(w)
        if stopping and on_stop is not None:
            on_stop()
        for w in stopping:
            if w.marker:
                terminate_marked(w.marker)
        left = self.join(grace_s)
        if left:
            LOG.warning("still running %.0f s after they were stopped (they end with the "
                        "process): %s", grace_s, ", ".join(left))
        return [w.name for w in stopping]


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    ident = thread.ident
    if ident is None:
        return
    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                     ctypes.py_object(exc_type))
    if hit > 1:  # never one thread id for two threads; undo rather than hit the wrong one
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)


def terminate_marked(marker: str) -> list[int]:
    """SIGTERM, then SIGKILL after ``KILL_AFTER_S``, to this process's descendants whose
    environment has ``MARKER_VARIABLE=marker``; their pids."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in requirements.txt
        LOG.warning("psutil is not installed: the processes of a stopped job are not stopped")
        return []
    marked = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.environ().get(MARKER_VARIABLE) == marker:
                child.terminate()
                marked.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    _, alive = psutil.wait_procs(marked, timeout=KILL_AFTER_S)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    return [c.pid for c in marked]
