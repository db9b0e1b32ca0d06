"""The report's sections, read from a run folder (``harness.report`` puts them on the
page): file readers that never raise, each step kind's own table of its output, the
training curves (the training script's per-epoch ``history``, else the train step's log
lines), the evaluation's metrics and confusion matrix, the tuning trials and the newest
drift check. Every image is a ``data:`` URI; a missing or malformed file is listed in
``missing``, never raised."""
from __future__ import annotations

import base64
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

LOG_TAIL = 40
MAX_JSON_CHARS = 200_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ reading
def _read_json(path: Path, missing: list[str], what: str) -> Any:
    """The file's JSON, or None with a note in ``missing`` (absent or malformed)."""
    try:
        return json.loads(path.read_text(errors="replace"))
    except FileNotFoundError:
        missing.append(f"{what}: {path.name} not found")
    except (OSError, ValueError) as e:
        missing.append(f"{what}: {path.name} is not readable JSON ({e})")
    return None


def _text(path: Path | None, limit: int = MAX_JSON_CHARS) -> str | None:
    if path is None or not path.is_file():
        return None
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


def _pretty_json(path: Path | None) -> str | None:
    text = _text(path, limit=10 * MAX_JSON_CHARS)
    if text is None:
        return None
    try:
        text = json.dumps(json.loads(text), indent=2, default=str)
    except ValueError:
        pass  # shown as it is
    return text if len(text) <= MAX_JSON_CHARS else text[:MAX_JSON_CHARS] + "\n…"


def _log_tail(path: Path | None) -> str | None:
    text = _text(path, limit=1 << 30)
    return None if text is None else "\n".join(text.splitlines()[-LOG_TAIL:])


def _inside(run_dir: Path, rel: Any) -> Path | None:
    """``run_dir / rel`` when ``rel`` is a relative path that stays in the run folder."""
    if not isinstance(rel, str) or not rel:
        return None
    path = (run_dir / rel).resolve()
    return path if path.is_relative_to(run_dir.resolve()) else None


def _local(uri: Any, run_dir: Path | None = None) -> Path | None:
    """The path of a ``file://`` URI (``uris.local_path``); for an ``s3://`` URI, the run's
    local copy of it (``uris.mirror_path``: a cloud run downloads what its report shows);
    None for anything else."""
    from harness import uris
    if isinstance(uri, str) and uri.startswith("s3://") and run_dir is not None:
        return uris.mirror_path(run_dir, uri)
    return uris.local_path(uri) if isinstance(uri, str) and uri.startswith("file://") else None


def _png_uri(path: Path | None) -> str | None:
    """A ``data:`` URI of a PNG file (None when absent or not a PNG)."""
    try:
        data = path.read_bytes() if path is not None else b""
    except OSError:
        return None
    return _png_bytes_uri(data) if data.startswith(PNG_SIGNATURE) else None


def _png_bytes_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _newest(paths) -> Path | None:
    found = []
    for p in paths:
        try:
            found.append((p.stat().st_mtime, str(p), p))
        except OSError:
            continue
    return max(found)[2] if found else None


# -------------------------------------------------------------------------- graph
def _kind_table(kind: str, output_path: Path | None) -> dict[str, Any] | None:
    """The step kind's own table of its output (a tuning job's trials), if it has one."""
    if output_path is None or not output_path.is_file():
        return None
    try:
        from harness.steps import step_table

        shown = step_table(kind, json.loads(output_path.read_text()))
    except Exception:  # noqa: BLE001 - a malformed output has no table
        return None
    if not shown:
        return None
    columns, rows = shown
    return {"columns": columns, "rows": [[_cell(v) for v in row] for row in rows]}


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


_EPOCH = re.compile(r"epoch=(\d+)(?:/\d+)?((?:\s+\w+=[-0-9.eE+naif]+)+)")
CURVES = (("loss", "loss", "train_loss"), ("val_loss", "val_loss", "val_loss"),
          ("accuracy", "accuracy", "train_accuracy"),
          ("val_accuracy", "val_accuracy", "val_accuracy"))


def _history(run_dir: Path, steps: list[Any]) -> tuple[dict[str, list[float]] | None, str]:
    """Per-epoch metrics of the training step and where they came from: the training
    script's ``metrics.json`` (``history``, beside ``model.tar.gz`` under ``data/`` or in
    ``output.tar.gz``), else the ``epoch=N/M key=value`` lines of the step's log."""
    for s in steps:
        if s.kind != "training":
            continue
        out_path = _inside(run_dir, s.output)
        try:
            output = json.loads(out_path.read_text()) if out_path else {}
        except (OSError, ValueError):
            output = {}
        model = _local(((output or {}).get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
                       run_dir)
        if model is not None:
            hist = _history_file(model.parent)
            if hist:
                return hist, f"{s.name}: {model.parent / 'data' / 'metrics.json'}"
        hist = _history_log(_inside(run_dir, s.log))
        if hist:
            return hist, f"{s.name}: the epoch lines of its log"
    return None, ""


def _history_file(output_dir: Path) -> dict[str, list[float]] | None:
    try:
        path = output_dir / "data" / "metrics.json"
        if path.is_file():
            data = json.loads(path.read_text())
        elif (output_dir / "output.tar.gz").is_file():
            with tarfile.open(output_dir / "output.tar.gz") as tar:
                member = next((m for m in tar.getmembers()
                               if m.isfile() and Path(m.name).name == "metrics.json"), None)
                if member is None:
                    return None
                data = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
        else:
            return None
        hist = data.get("history") if isinstance(data, dict) else None
    except (OSError, ValueError, tarfile.TarError):
        return None
    if not isinstance(hist, dict):
        return None
    out = {k: [float(x) for x in v] for k, v in hist.items()
           if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)}
    return out or None


def _history_log(path: Path | None) -> dict[str, list[float]] | None:
    text = _text(path, limit=1 << 30)
    if not text:
        return None
    rows: dict[int, dict[str, float]] = {}
    for m in _EPOCH.finditer(text):
        values = {}
        for pair in m.group(2).split():
            key, _, value = pair.partition("=")
            try:
                values[key] = float(value)
            except ValueError:
                continue
        rows[int(m.group(1))] = values
    if not rows:
        return None
    out: dict[str, list[float]] = {}
    for key, *aliases in CURVES:
        series = [next((r[a] for a in aliases if a in r), None) for _, r in sorted(rows.items())]
        if all(v is not None for v in series):
            out[key] = series  # type: ignore[assignment]
    return out or None


def _curves_png(hist: dict[str, list[float]]) -> str | None:
    from matplotlib.figure import Figure

    panels = [(name, [(k, label) for k, label in keys if k in hist])
              for name, keys in (("loss", (("loss", "training"), ("val_loss", "validation"))),
                                 ("accuracy", (("accuracy", "training"),
                                               ("val_accuracy", "validation"))))]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.2))
    for i, (name, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, label in keys:
            ax.plot(range(1, len(hist[key]) + 1), hist[key], marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        epochs = max(len(hist[k]) for k, _ in keys)
        if epochs <= 20:
            ax.set_xticks(range(1, epochs + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.9, wspace=0.25)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return _png_bytes_uri(buf.getvalue())


def _training(run_dir: Path, steps: list[Any], missing: list[str]) -> dict[str, Any] | None:
    if not any(s.kind == "training" for s in steps):
        return None
    hist, source = _history(run_dir, steps)
    if not hist:
        missing.append("training curves: no per-epoch metrics found (the training job's "
                       "data/metrics.json or epoch lines in its log)")
        return None
    epochs = max(len(v) for v in hist.values())
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in hist]
    keys += sorted(k for k in hist if k not in keys)
    try:
        plot = _curves_png(hist)
    except Exception as e:  # noqa: BLE001
        plot = None
        missing.append(f"training curves: could not be drawn ({type(e).__name__}: {e})")
    return {"plot": plot, "source": source, "columns": keys,
            "rows": [[i + 1, *[_cell(hist[k][i]) if i < len(hist[k]) else "" for k in keys]]
                     for i in range(epochs)]}


def _evaluation_dir(run_dir: Path, steps: list[Any]) -> Path | None:
    if (run_dir / "evaluation" / "evaluation.json").is_file():
        return run_dir / "evaluation"
    for s in steps:  # a processing step whose output folder holds evaluation.json
        path = _inside(run_dir, s.output)
        try:
            output = json.loads(path.read_text()) if path else None
            outs = output["ProcessingOutputConfig"]["Outputs"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for o in outs if isinstance(outs, list) else []:
            folder = _local((o.get("S3Output") or {}).get("S3Uri"), run_dir) \
                if isinstance(o, dict) else None
            if folder is not None and (folder / "evaluation.json").is_file():
                return folder
    return None


def _evaluation(run_dir: Path, steps: list[Any], missing: list[str]) -> dict[str, Any] | None:
    folder = _evaluation_dir(run_dir, steps)
    if folder is None:
        if any(s.kind == "processing" for s in steps):
            missing.append("evaluation: evaluation/evaluation.json not found")
        return None
    data = _read_json(folder / "evaluation.json", missing, "evaluation")
    data = data if isinstance(data, dict) else {}
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    per_class = [r for r in data.get("per_class") or [] if isinstance(r, dict)] \
        if isinstance(data.get("per_class"), list) else []
    columns = list(dict.fromkeys(k for r in per_class for k in r))
    matrix = _png_uri(folder / "confusion_matrix.png")
    if matrix is None:
        missing.append("evaluation: confusion_matrix.png missing or not a PNG")
    wrong = data.get("misclassified") if isinstance(data.get("misclassified"), dict) else {}
    mistakes = None
    if isinstance(wrong.get("count"), int):
        shown = wrong.get("shown") if isinstance(wrong.get("shown"), list) else []
        mistakes = {"count": wrong["count"], "shown": len(shown),
                    "plot": _png_uri(folder / "misclassified.png")}
    return {"metrics": [(k, _cell(v)) for k, v in metrics.items()
                        if isinstance(v, (int, float, str))],
            "columns": columns,
            "rows": [[_cell(r.get(c)) for c in columns] for r in per_class],
            "matrix": matrix, "count": _cell(data.get("count")), "mistakes": mistakes}


def _tuning(run_dir: Path, steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    tables = [(s["name"], s["table"]) for s in steps
              if s["table"] and s["kind"] == "tuning"]
    plot = _png_uri(_newest(p for p in run_dir.rglob("trials.png")
                            if "code" not in p.relative_to(run_dir).parts[:1]))
    if not tables and plot is None:
        return None
    return {"tables": tables, "plot": plot}


def _drift(run_dir: Path, missing: list[str]) -> dict[str, Any] | None:
    path = _newest((run_dir / "monitoring").glob("*/drift_report.json"))
    if path is None:
        return None
    report = _read_json(path, missing, "drift")
    report = report if isinstance(report, dict) else {}
    facts = [(k, _cell(report.get(k))) for k in
             ("status", "violation_count", "drifted_features", "message", "endpoint")
             if report.get(k) not in (None, "", [])]
    features = [f for f in report.get("features") or [] if isinstance(f, dict)] \
        if isinstance(report.get("features"), list) else []
    columns = list(dict.fromkeys(k for f in features for k in f
                                 if not isinstance(f[k], (dict, list))))
    return {"folder": str(path.parent.relative_to(run_dir)), "facts": facts,
            "summary": _text(path.with_name("summary.txt")),
            "columns": columns, "rows": [[_cell(f.get(c)) for c in columns] for f in features],
            "plot": _png_uri(path.with_name("drift.png"))}


# ---------------------------------------------------------------------------- build
