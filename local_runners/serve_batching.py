"""Adaptive micro-batching for the embedded model server (TF Serving's batching, in asyncio).

Requests that arrive while the model is busy queue up and are merged into one model call
when it is free again; results are split back per request. The knobs mirror TF Serving's
``batching_parameters.txt``:

- ``max_batch_size``        most instances (rows) merged into one call; a request with more
  rows than this runs alone (it is never split);
- ``batch_timeout_micros``  how long the head of the queue may wait for more rows while the
  model is idle. The wait is *adaptive*: it only happens while other requests have been
  received and are still being decoded (they are about to join), so a lone client never
  pays it. 0 means "never wait: take what is queued". Requests whose bytes arrived in the
  same event loop iteration always share a call (dispatch is deferred to its end).
- ``num_batch_threads``     model calls that may run at the same time (1 by default: on a
  small machine one TF call already uses every core).

A worker thread that finishes a model call hands the results to the event loop and takes the
next batch from the (locked) queue itself, so the model does not sit idle until a busy event
loop gets round to noticing that the call is over; the loop dispatches only when no worker
is running.

Only requests with the same key (model version, signature, per-row shapes and dtypes) are
merged. If a merged call fails, each of its requests is run alone, so a request that makes
the model fail gets its own error and the others still get their answers.
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable

import numpy as np

Arrays = dict[str, np.ndarray]
# run(fn, *args) -> awaitable: how model calls leave the event loop (a thread pool)
Runner = Callable[..., Awaitable[Any]]


@dataclass
class _Pending:
    key: Hashable
    fn: Callable[[Arrays], Arrays]
    arrays: Arrays
    rows: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    requests: int = 0
    model_calls: int = 0
    rows: int = 0
    largest_batch: int = 0
    fallbacks: int = 0          # merged calls that failed and were retried one by one

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "model_calls": self.model_calls, "rows": self.rows,
                "largest_batch": self.largest_batch, "fallbacks": self.fallbacks,
                "mean_batch_rows": round(self.rows / self.model_calls, 2)
                if self.model_calls else 0.0}


class MicroBatcher:
    """Queue ``submit`` calls from one event loop and merge them into model calls."""

    def __init__(self, run: Runner, max_batch_size: int = 64, batch_timeout_micros: int = 0,
                 num_batch_threads: int = 1):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {batch_timeout_micros}")
        if num_batch_threads < 1:
            raise ValueError(f"num_batch_threads must be >= 1, got {num_batch_threads}")
        self._run = run
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout_micros / 1e6
        self.num_batch_threads = num_batch_threads
        self._queue: collections.deque[_Pending] = collections.deque()
        # the queue is shared with the worker threads, which take the next batch themselves
        self._lock = threading.Lock()
        self._busy = 0                  # model calls in progress
        self._arriving = 0              # requests received and still being decoded
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False
        self.stats = BatchStats()

    # -- callers
    def arrive(self) -> None:
        """A request was received and is being decoded: it will ``submit`` (with
        ``arrived=True``) or ``depart`` soon, so an idle model may wait for it."""
        self._arriving += 1

    def depart(self) -> None:
        """An arrived request will not be submitted (it was malformed)."""
        with self._lock:
            self._arriving -= 1
        if not self._arriving and self._queue:
            self._dispatch()      # nobody else is coming: do not sit out the timeout

    async def submit(self, key: Hashable, fn: Callable[[Arrays], Arrays], arrays: Arrays,
                     arrived: bool = False) -> Arrays:
        """Run ``fn`` on ``arrays`` (merged with other requests of the same ``key``)."""
        rows = len(next(iter(arrays.values())))
        future = asyncio.get_running_loop().create_future()
        self.stats.requests += 1
        with self._lock:
            self._queue.append(_Pending(key, fn, arrays, rows, future))
            if arrived:
                self._arriving -= 1
        if not self._soon:
            # dispatch at the end of this loop iteration: requests whose bytes arrived
            # together are all queued by then and share the call (no timer needed)
            self._soon = True
            asyncio.get_running_loop().call_soon(self._dispatch_soon)
        return await future

    # -- scheduling (always on the event loop thread)
    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._busy < self.num_batch_threads:
            with self._lock:
                if not self._queue:
                    return
                if not self._ready():
                    if self._timer is None:
                        left = self._queue[0].enqueued + self.batch_timeout - time.perf_counter()
                        self._timer = loop.call_later(max(left, 0.0), self._wake)
                    return
                batch = self._take()
            self._busy += 1
            loop.create_task(self._execute(batch))

    def _ready(self) -> bool:
        """Whether the head of the queue may run now (else it waits for requests that are
        being received, up to ``batch_timeout``). Called with the lock held."""
        if not self._queue:
            return False
        head = self._queue[0]
        if head.rows < self.max_batch_size and self.batch_timeout > 0 and self._arriving:
            queued = sum(p.rows for p in self._queue if p.key == head.key)
            left = head.enqueued + self.batch_timeout - time.perf_counter()
            if queued < self.max_batch_size and left > 0:
                return False
        return True

    def _dispatch_soon(self) -> None:
        self._soon = False
        self._dispatch()

    def _wake(self) -> None:
        self._timer = None
        self._dispatch()

    def _take(self) -> list[_Pending]:
        head = self._queue.popleft()
        batch, rows = [head], head.rows
        if rows >= self.max_batch_size:
            return batch                                   # too big to share: goes alone
        keep: collections.deque[_Pending] = collections.deque()
        while self._queue:
            p = self._queue.popleft()
            if p.key == head.key and rows + p.rows <= self.max_batch_size:
                batch.append(p)
                rows += p.rows
            else:
                keep.append(p)
            if rows >= self.max_batch_size:
                break
        keep.extend(self._queue)
        self._queue = keep
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._run(self._work, batch, loop)
        except (Exception, asyncio.CancelledError) as e:  # the runner failed (pool shut down)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
        finally:
            self._busy -= 1
            if loop.is_running():   # not when a stopped server's loop closes this task
                self._dispatch()

    def _work(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        """In a worker thread: run ``batch``, hand its results to the loop, then go on with
        whatever queued up meanwhile, so the model never waits for a busy event loop to
        notice that it is free (the loop only dispatches when no worker is running)."""
        while batch:
            live = [p for p in batch if not p.future.done()]   # a cancelled client
            if live:
                try:
                    results = _call_batch(live)
                except BaseException as e:  # not a model error (those are in outcomes)
                    results = _Results([e] * len(live), 0)
                try:
                    loop.call_soon_threadsafe(self._deliver, live, results)
                except RuntimeError:        # the loop is closed: nobody is waiting
                    return
            with self._lock:
                batch = self._take() if self._ready() else None

    def _deliver(self, live: list[_Pending], results: "_Results") -> None:
        rows = sum(p.rows for p in live)
        self.stats.model_calls += results.calls
        self.stats.fallbacks += results.fallback
        self.stats.rows += rows
        self.stats.largest_batch = max(self.stats.largest_batch, rows)
        for p, outcome in zip(live, results.outcomes):
            if p.future.done():
                continue
            if isinstance(outcome, BaseException):
                p.future.set_exception(outcome)
            else:
                p.future.set_result(outcome)


@dataclass
class _Results:
    outcomes: list[Any]
    calls: int
    fallback: int = 0


def _call_batch(batch: list[_Pending]) -> _Results:
    """In a worker thread: one model call for the batch, split per request."""
    fn = batch[0].fn
    if len(batch) == 1:
        try:
            return _Results([fn(batch[0].arrays)], 1)
        except Exception as e:
            return _Results([e], 1)
    total = sum(p.rows for p in batch)
    merged = {k: np.concatenate([p.arrays[k] for p in batch]) for k in batch[0].arrays}
    try:
        out = fn(merged)
        if any(np.ndim(v) == 0 or len(v) != total for v in out.values()):
            raise ValueError("an output has no batch dimension")   # cannot split: rerun alone
    except Exception:
        outcomes = []
        for p in batch:
            try:
                outcomes.append(fn(p.arrays))
            except Exception as e:
                outcomes.append(e)
        return _Results(outcomes, 1 + len(batch), fallback=1)
    bounds = np.cumsum([p.rows for p in batch])[:-1]
    pieces = {k: np.split(v, bounds) for k, v in out.items()}
    return _Results([{k: pieces[k][i] for k in out} for i in range(len(batch))], 1)
