"""Progress reporting: stages call ``ctx.progress.task(...)``; the CLI shows it with rich."""
from __future__ import annotations

import contextlib
from typing import Iterator, Protocol


class TaskHandle(Protocol):
    def advance(self, amount: float = 1) -> None: ...
    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None
             ) -> contextlib.AbstractContextManager[TaskHandle]: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, *, completed=None, total=None, description=None) -> None:
        pass


class NullProgress:
    """Progress that shows nothing (tests, library use)."""

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[TaskHandle]:
        yield _NullTask()


class _RichTask:
    def __init__(self, progress, task_id):
        self._p, self._id = progress, task_id

    def advance(self, amount: float = 1) -> None:
        self._p.advance(self._id, amount)

    def update(self, *, completed=None, total=None, description=None) -> None:
        kw = {k: v for k, v in (("completed", completed), ("total", total),
                                ("description", description)) if v is not None}
        self._p.update(self._id, **kw)


class RichProgress:
    """Progress bars on a rich.progress.Progress; finished tasks stay visible."""

    def __init__(self, progress):
        self._p = progress

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[TaskHandle]:
        task_id = self._p.add_task("  " + description, total=total)
        try:
            yield _RichTask(self._p, task_id)
        finally:
            task = self._p.tasks[task_id] if task_id < len(self._p.tasks) else None
            if task is not None and task.total is None:
                self._p.update(task_id, total=1, completed=1)
            self._p.stop_task(task_id)
