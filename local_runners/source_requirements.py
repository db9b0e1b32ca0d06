"""A source dir's ``requirements.txt``, installed as SageMaker's training container does.

The ``sagemaker-training`` toolkit runs ``python -m pip install -r requirements.txt`` in the
unpacked source dir before the entry point (``modules.install_requirements``): into the
container's own environment, so a requirement the framework already satisfies is skipped,
and a failed install is the job's error (``InstallRequirementsError``). The local trainer
must not change this venv, so it installs into a *layer*, a folder put on the job's
``PYTHONPATH`` before the framework's site-packages:

1. ``pip install --dry-run --report`` against this venv resolves the file as the container
   would (already-satisfied requirements are left out, an upgrade is kept) -- ``pip
   install --target`` alone would not do that: ``--target`` ignores what is installed and
   puts numpy, TensorFlow's own dependencies ... again into the layer, shadowing the
   framework's versions;
2. ``pip install --target <tmp> --no-deps`` of exactly what the dry run chose;
3. the folder is renamed into ``<cache>/requirements/<key>/``. The key is a sha256 of the
   file's bytes (and of the files it includes, and of the local projects it names), the
   Python version and the framework's installed distributions: the next job with the same
   file reuses the layer without running pip. A failed install leaves no layer.

The cache root is ``$MLHARNESS_CACHE`` (as ``cloud_runners.images``), else
``~/.cache/mlharness``. pip reads its own configuration (``PIP_INDEX_URL``,
``PIP_NO_INDEX``, ``pip.conf``) as it would in the container.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from harness.errors import StepFailed
from local_runners.train_process import DROPPED_VARIABLES, framework_path

FILE = "requirements.txt"
MANIFEST = ".mlharness-requirements.json"
PIP_TIMEOUT_S = 900.0
ERROR_LINES = 5
# What pip writes beside a local project while it builds it: not part of its content.
_BUILD_LEFTOVERS = ("__pycache__", "build", "dist", ".git")


def cache_root() -> Path:
    return Path(os.environ.get("MLHARNESS_CACHE", "~/.cache/mlharness")).expanduser() \
        / "requirements"


# -- the layer's key ---------------------------------------------------------------------

def _lines(path: Path) -> list[str]:
    """The file's logical lines: comments and ``\\`` continuations handled as pip does."""
    out, pending = [], ""
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            out.append(line)
    return out


def _included(line: str) -> str | None:
    """The file a ``-r``/``-c`` line names."""
    for opt in ("-r", "--requirement", "-c", "--constraint"):
        if line.startswith(opt + " ") or line.startswith(opt + "="):
            return line[len(opt) + 1:].strip()
        if opt.startswith("-") and not opt.startswith("--") and line.startswith(opt) \
                and len(line) > len(opt):
            return line[len(opt):].strip()
    return None


def _local_target(line: str, cwd: Path) -> Path | None:
    """The local project or archive a requirement line names (``./pkg``, ``-e ./pkg``,
    ``name @ file:///...``, ``/abs/pkg.whl``), else None."""
    if line.startswith(("-e ", "--editable ", "--editable=")):
        line = line.split(None, 1)[1] if " " in line else line.split("=", 1)[1]
    elif line.startswith("-"):
        return None
    spec = line.split(";", 1)[0].strip()
    if " @ " in spec:
        spec = spec.split(" @ ", 1)[1].strip()
    if spec.startswith("file:"):
        spec = unquote(urlparse(spec).path)
    spec = spec.split("#", 1)[0].strip()
    if not spec or not any(ch in spec for ch in "/\\.") or spec.startswith(("http:", "https:")):
        return None
    path = (cwd / spec) if not os.path.isabs(spec) else Path(spec)
    return path if path.exists() else None


def _hash_tree(h, path: Path) -> None:
    if path.is_file():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
        return
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if any(part in _BUILD_LEFTOVERS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if p.is_file():
            h.update(str(rel).encode() + b"\0" + p.read_bytes() + b"\0")


def _framework_fingerprint() -> list[str]:
    """The framework's installed distributions (``numpy-2.1.3.dist-info`` ...): the dry run
    skips what they satisfy, so the layer depends on them. Directory names only: reading
    every METADATA file would cost a second."""
    names: set[str] = set()
    for site in framework_path():
        try:
            names.update(n for n in os.listdir(site) if n.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
    return sorted(names)


def layer_key(source: Path) -> str:
    """sha256 of what decides the layer's content (see the module's docstring)."""
    h = hashlib.sha256()
    h.update(f"{sys.implementation.cache_tag} {platform.machine()} {sys.version}\0".encode())
    h.update("\n".join(_framework_fingerprint()).encode() + b"\0")
    todo, seen = [source / FILE], set()
    while todo:
        path = todo.pop(0).resolve()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        h.update(path.read_bytes() + b"\0")
        for line in _lines(path):
            inc = _included(line)
            if inc:
                todo.append(path.parent / inc)
                continue
            local = _local_target(line, source)  # pip resolves local paths from its cwd
            if local is not None:
                _hash_tree(h, local)
    return h.hexdigest()


# -- pip ---------------------------------------------------------------------------------

def _pip(args: list[str], cwd: Path, job: str, requirements: Path) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_VARIABLES}
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    env.setdefault("PIP_NO_INPUT", "1")
    try:
        out = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, encoding="utf-8",
                             errors="replace", timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _failed(job, requirements, f"pip did not finish in {PIP_TIMEOUT_S:.0f} s",
                      cmd) from None
    if out.returncode != 0:
        lines = [ln for ln in (out.stderr or out.stdout).splitlines() if ln.strip()]
        detail = " | ".join(ln.strip() for ln in lines[-ERROR_LINES:]) \
            or f"exit code {out.returncode}"
        raise _failed(job, requirements, detail, cmd, out.returncode)


def _failed(job: str, requirements: Path, detail: str, cmd: list[str],
            code: int | None = None) -> StepFailed:
    # SageMaker: the job fails with the toolkit's InstallRequirementsError
    return StepFailed("train", f"training job {job} failed: InstallRequirementsError: "
                      f"{detail}", file=str(requirements),
                      expected="requirements pip can install (python -m pip install -r "
                      "requirements.txt, as the SageMaker training container runs it)",
                      hint=f"command: {' '.join(cmd)}"
                      + (f" (exit code {code})" if code is not None else ""))


def _plan(source: Path, job: str, report: Path) -> list[dict]:
    """What pip would install into this venv for the file (the dry run's report): name,
    version and where it comes from."""
    requirements = source / FILE
    _pip(["install", "--dry-run", "--quiet", "--report", str(report), "-r", FILE],
         source, job, requirements)
    items = []
    for item in json.loads(report.read_text(encoding="utf-8")).get("install", []):
        meta, info = item.get("metadata", {}), item.get("download_info", {})
        url = info.get("url", "")
        vcs = info.get("vcs_info")
        if vcs:  # install the commit the dry run resolved
            url = f"{vcs['vcs']}+{url}@{vcs['commit_id']}"
        items.append({"name": meta.get("name"), "version": meta.get("version"), "url": url})
    return items


def _satisfied(source: Path, planned: list[dict]) -> list[str]:
    """The file's named requirements the framework already satisfies (for the log)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    chosen = {canonicalize_name(p["name"] or "") for p in planned}
    out = []
    for line in _lines(source / FILE):
        if line.startswith("-"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.url is None and canonicalize_name(req.name) not in chosen:
            out.append(req.name)
    return out


def install_layer(source: Path, job: str, log: logging.Logger) -> list[Path]:
    """The layer for ``source/requirements.txt`` (built once, then reused): ``[layer]``,
    or ``[]`` when the source dir has no such file. StepFailed if pip fails."""
    requirements = source / FILE
    if not requirements.is_file():
        return []
    root = cache_root()
    layer = root / layer_key(source)
    if (layer / MANIFEST).is_file():
        manifest = json.loads((layer / MANIFEST).read_text(encoding="utf-8"))
        log.info("requirements.txt: reusing the layer %s (%s)", layer,
                 _names(manifest["installed"]) or "nothing to install")
        return [layer]
    log.info("Installing dependencies from requirements.txt into %s", layer)
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{layer.name[:16]}-", dir=root))
    try:
        planned = _plan(source, job, building / "report.json")
        (building / "report.json").unlink()
        if planned:
            _pip(["install", "--quiet", "--no-deps", "--no-warn-script-location",
                  "--target", str(building), *[p["url"] for p in planned]],
                 source, job, requirements)
        satisfied = _satisfied(source, planned)
        (building / MANIFEST).write_text(json.dumps(
            {"installed": planned, "satisfied_by_framework": satisfied,
             "python": sys.version.split()[0]}, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(building, layer)
        except OSError:
            if not (layer / MANIFEST).is_file():  # not another job's layer: a real error
                raise
            log.info("requirements.txt: another job built the layer first; using it")
    finally:
        shutil.rmtree(building, ignore_errors=True)
    log.info("requirements.txt: installed %s; already in the framework: %s",
             _names(planned) or "nothing", ", ".join(satisfied) or "nothing")
    return [layer]


def _names(items: list[dict]) -> str:
    return ", ".join(f"{p['name']}=={p['version']}" for p in items)
