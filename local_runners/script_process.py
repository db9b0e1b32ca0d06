"""Run a job's Python script in this process, as its container would run it.

The local training runner (SageMaker script mode) and the local processing runner run a
user's script with ``runpy`` instead of a new interpreter: TensorFlow, pyarrow and the
rest are imported once, and the script's output is read line by line as it comes.
While the script runs, the process looks like the container to it: its environment
variables, ``sys.argv``, working directory, its folder first on ``sys.path``, and the
modules of its folder (``train``, ``data``, ...) resolving to its own files, not to a
module of the same name already imported. All of it is restored afterwards.

That state is process-wide, so one script runs at a time (``run_script`` holds a lock).
"""
from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable, Iterator

# Scripts change process-wide state (environment, argv, cwd, stdout): one at a time.
_LOCK = threading.RLock()


class LineTee(io.TextIOBase):
    """A text stream that hands every complete line to a callback."""

    def __init__(self, on_line: Callable[[str], None]):
        self._on_line = on_line
        self._buf = ""

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return "utf-8"

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._on_line(line.rstrip("\r"))
        return len(text)

    def close_partial(self) -> None:
        if self._buf:
            line, self._buf = self._buf, ""
            self._on_line(line)


@contextlib.contextmanager
def script_process_state(env: dict[str, str], argv: list[str], source: Path, cwd: Path
                         ) -> Iterator[None]:
    """Environment, argv, sys.path, cwd and shadowed modules for the script; all restored."""
    saved_env = dict(os.environ)
    saved_argv, saved_path, saved_cwd = list(sys.argv), list(sys.path), os.getcwd()
    # Top-level modules of the source dir (train, data, network) must not resolve to a
    # module of the same name already imported, nor stay imported afterwards.
    local_names = {p.stem for p in source.glob("*.py")} | {p.name for p in source.iterdir()
                                                            if (p / "__init__.py").exists()}
    shadowed = {n: m for n, m in sys.modules.items() if n.split(".")[0] in local_names}
    for name in shadowed:
        del sys.modules[name]
    os.environ.update(env)
    sys.argv = argv
    sys.path.insert(0, str(source))
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        sys.argv, sys.path[:] = saved_argv, saved_path
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        for key, value in saved_env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        for name in [n for n in sys.modules if n.split(".")[0] in local_names]:
            del sys.modules[name]
        sys.modules.update(shadowed)


class ScriptFailed(Exception):
    """The script exited non-zero, or raised.

    ``exit_code``: the ``SystemExit`` code (an int, or the message a script passed to
    ``sys.exit``), 1 for an exception; ``detail``: what to report -- that message, else
    the last non-blank stderr line, else "exit code N", or ``Type: message`` of the
    exception; ``error``/``traceback``: the exception the script raised (else None).
    """

    def __init__(self, exit_code: int | str, detail: str, error: BaseException | None = None,
                 traceback_text: str | None = None):
        self.exit_code = exit_code
        self.detail = detail
        self.error = error
        self.traceback = traceback_text
        super().__init__(detail)


def run_script(script: Path, argv: list[str], env: dict[str, str], *, source: Path, cwd: Path,
               on_stdout: Callable[[str], None], on_stderr: Callable[[str], None],
               stderr_tail: int = 5) -> None:
    """Run ``script`` as ``__main__`` with ``sys.argv = argv`` and ``env`` added to the
    environment; its stdout/stderr lines go to the callbacks. A zero (or no) exit
    returns; otherwise ScriptFailed."""
    tail: list[str] = []

    def on_err(line: str) -> None:
        if line.strip():
            tail[:] = (tail + [line])[-stderr_tail:]
        on_stderr(line)

    out, err = LineTee(on_stdout), LineTee(on_err)
    with _LOCK:
        try:
            with script_process_state(env, argv, source, cwd), \
                    contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                runpy.run_path(str(script), run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                detail = (e.code if isinstance(e.code, str)
                          else tail[-1] if tail else f"exit code {e.code}")
                raise ScriptFailed(e.code, detail) from None
        except Exception as e:  # the script's own error
            raise ScriptFailed(1, f"{type(e).__name__}: {e}", e,
                               traceback.format_exc()) from e
        finally:
            out.close_partial()
            err.close_partial()
