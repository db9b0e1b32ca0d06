"""Progress reporting: stages call ``ctx.progress.task(...)`` (a bar) and
``ctx.progress.table(...)`` (a live table, e.g. a tuning job's trials); the CLI shows them
with rich."""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Protocol, Sequence

import rich.progress
from rich.table import Table


class TaskHandle(Protocol):
    def advance(self, amount: float = 1) -> None: ...
    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None
             ) -> contextlib.AbstractContextManager[TaskHandle]: ...

    def table(self, title: str, columns: Sequence[str]
              ) -> contextlib.AbstractContextManager["TableHandle"]: ...


class TableHandle(Protocol):
    def row(self, key: str, cells: dict[str, Any]) -> None:
        """Add the row ``key`` or update its cells (columns not named keep their value)."""


class NullTable:
    def row(self, key: str, cells: dict[str, Any]) -> None:
        pass


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

    @contextlib.contextmanager
    def table(self, title: str, columns: Sequence[str]) -> Iterator[TableHandle]:
        yield NullTable()


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

    @contextlib.contextmanager
    def table(self, title: str, columns: Sequence[str]) -> Iterator[TableHandle]:
        """A table shown live below the bars (with a ``LiveProgress``) and printed once,
        final, when the block ends; a row's ``_style`` cell is its rich style."""
        table = LiveTable(title, columns)
        live = isinstance(self._p, LiveProgress)
        if live:
            self._p.tables.append(table)
        try:
            yield table
        finally:
            if live:
                self._p.tables.remove(table)
            self._p.console.print(table)


class LiveTable:
    """The rows of a live table, rendered afresh on every refresh (thread-safe), in the
    order of their keys."""

    def __init__(self, title: str, columns: Sequence[str]):
        self.title, self.columns = title, list(columns)
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def row(self, key: str, cells: dict[str, Any]) -> None:
        with self._lock:
            self._rows.setdefault(key, {}).update(cells)

    def __rich__(self) -> Table:
        table = Table(title=self.title, title_justify="left", expand=False)
        for i, column in enumerate(self.columns):
            last = i == len(self.columns) - 1  # the last column wraps, the others do not
            table.add_column(column, no_wrap=not last, min_width=None if last else len(column))
        with self._lock:
            rows = [dict(self._rows[k]) for k in sorted(self._rows)]
        for r in rows:
            table.add_row(*(str(r.get(c, "")) for c in self.columns),
                          style=r.get("_style"))
        return table


class LiveProgress(rich.progress.Progress):
    """rich's Progress that also shows the live tables of running steps below its bars."""

    def __init__(self, *columns: Any, **kwargs: Any):
        self.tables: list[LiveTable] = []  # before rich's __init__, which may render
        super().__init__(*columns, **kwargs)

    def get_renderables(self):
        yield from super().get_renderables()
        yield from list(self.tables)
