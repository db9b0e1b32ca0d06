"""Evaluate the trained model on the test split: the SageMaker Processing job's script.

    python evaluate.py --model DIR --test DIR --output DIR

``--model`` is a folder holding ``model.tar.gz`` (as a processing input delivers the
training job's artefact), ``--test`` a folder of the ETL's Parquet part files, ``--output``
the folder the job uploads. The script unpacks the archive safely, loads the newest
numeric ``<version>/`` SavedModel and calls its ``serving_default`` signature (input
``pixels`` -> ``probabilities``) -- the entry point the endpoint serves, so the score is
the deployed artefact's. It writes ``evaluation.json``::

    {"metrics": {"accuracy", "loss", "macro_precision", "macro_recall"},
     "per_class": [{"class", "precision", "recall", "support"}],
     "confusion_matrix": [[int]], "count": N, "model_version": int,
     "misclassified": {"count": int, "shown": [{"index", "true", "predicted",
                                               "confidence"}]}}

``misclassified.shown`` lists up to 25 wrongly classified test rows, the most confident
mistakes first (``index`` is the row in the test split). It writes
``confusion_matrix.png`` and ``misclassified.png`` (those digits drawn in a grid with
their predicted and true labels; skipped when the rows are not square images) -- both
skipped, and said so, without matplotlib -- and prints one
line per metric (``accuracy=0.9800``). Bad input: one line on stderr naming the file,
the field and the expected value, exit code 2.

It ships beside ``train.py`` and runs in the SageMaker TensorFlow image, so it depends
on numpy, TensorFlow and ``data.py`` (pyarrow) only, never on ``harness``. When pyarrow is
missing it first installs this folder's ``requirements.txt``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

METRICS = ("accuracy", "loss", "macro_precision", "macro_recall")
ARCHIVE = "model.tar.gz"
REPORT = "evaluation.json"
PLOT = "confusion_matrix.png"
MISCLASSIFIED_PLOT = "misclassified.png"
MAX_SHOWN = 25
BATCH = 1000
EPS = 1e-7
HERE = Path(__file__).resolve().parent


class InputError(ValueError):
    """Bad input: names the file, the field and the expected value (exit code 2)."""

    def __init__(self, file: str | os.PathLike, problem: str, *, field: str | None = None,
                 expected: str | None = None, got: object = None):
        self.file = str(file)
        self.problem = " ".join(problem.splitlines())  # one line on stderr
        self.field = field
        self.expected = expected
        self.got = got
        text = f"{self.file}: " + (f"field '{field}': " if field else "")
        text += self.problem.rstrip(".") + "."
        if expected is not None:
            text += f" Expected {expected}."
        if got is not None:
            text += f" Got {got!r}."
        super().__init__(text)


# ----------------------------------------------------------------------------- the model


def extract_model(archive: Path, dest: Path) -> tuple[int, Path]:
    """Unpack ``model.tar.gz`` into ``dest`` (no absolute or '..' members, tarfile's
    "data" filter); return the newest ``(version, <version>/ dir)`` holding a SavedModel."""
    expected = "the training job's model.tar.gz (<version>/saved_model.pb)"
    if not archive.is_file():
        raise InputError(archive, "model archive not found", expected=expected)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts:
                    raise InputError(archive, "unsafe member in the model archive",
                                     expected="relative paths such as 1/saved_model.pb",
                                     got=member.name)
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InputError(archive, f"cannot unpack the model archive ({e})",
                         expected=expected) from None
    versions = [(int(p.name), p) for p in dest.iterdir()
                if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()]
    if not versions:
        found = ", ".join(sorted(p.name for p in dest.iterdir())) or "an empty archive"
        raise InputError(archive, "no servable SavedModel version found", expected=expected,
                         got=found)
    return max(versions)


def predict(version_dir: Path, x: np.ndarray) -> np.ndarray:
    """Class probabilities from the SavedModel's serving_default signature, in batches."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as e:  # TF raises several unrelated types for a bad SavedModel
        raise InputError(version_dir, f"cannot load the SavedModel ({type(e).__name__}: {e})",
                         expected="a TensorFlow SavedModel") from None
    sig = loaded.signatures.get("serving_default")
    if sig is None:
        raise InputError(version_dir, "the SavedModel has no serving_default signature",
                         field="signatures", expected="signature 'serving_default'",
                         got=", ".join(loaded.signatures) or "no signatures")
    inputs = sig.structured_input_signature[1]
    if "pixels" not in inputs or "probabilities" not in sig.structured_outputs:
        raise InputError(version_dir, "serving_default has the wrong inputs/outputs",
                         field="serving_default",
                         expected="input 'pixels' -> output 'probabilities'",
                         got=f"inputs {sorted(inputs)}, outputs {sorted(sig.structured_outputs)}")
    width = inputs["pixels"].shape[-1]
    if width is not None and width != x.shape[1]:
        raise InputError(version_dir, "test data does not fit the model input", field="pixels",
                         expected=f"{width} values per row", got=int(x.shape[1]))
    out = [sig(pixels=tf.constant(x[i:i + BATCH]))["probabilities"].numpy()
           for i in range(0, len(x), BATCH)]
    return np.concatenate(out).astype(np.float64)


# ----------------------------------------------------------------------------- scores


def check_labels(y: np.ndarray, num_classes: int, source: str | os.PathLike) -> None:
    """Every label must be one of the model's classes ``0 .. num_classes - 1``."""
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise InputError(source, "labels outside the model's classes", field="label",
                         expected=f"values in [0, {num_classes - 1}]", got=int(y[bad][0]))


def score(probabilities: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy, mean cross-entropy, per-class and macro precision/recall (macro: over the
    classes present in ``y``), confusion matrix (rows: true class, columns: predicted)."""
    n, k = probabilities.shape
    check_labels(y, k, "labels")
    pred = probabilities.argmax(axis=1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    present = support > 0
    loss = float(-np.log(np.clip(probabilities[np.arange(n), y], EPS, 1.0)).mean())
    return {
        "metrics": {
            "accuracy": float(tp.sum() / n),
            "loss": loss,
            "macro_precision": float(precision[present].mean()),
            "macro_recall": float(recall[present].mean()),
        },
        "per_class": [{"class": c, "precision": float(precision[c]),
                       "recall": float(recall[c]), "support": int(support[c])}
                      for c in range(k)],
        "confusion_matrix": cm,
    }


def plot_confusion_matrix(cm: np.ndarray, path: Path, title: str,
                          log: Callable[[str], None] = print) -> bool:
    """Write the confusion matrix as a PNG; without matplotlib say so and return False."""
    try:
        import matplotlib
    except ImportError:
        log(f"matplotlib is not installed: {PLOT} is not written")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = cm.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.6 + 0.6 * k), dpi=100)
    try:
        ax.imshow(cm, cmap="Blues")
        limit = cm.max() / 2 if cm.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > limit else "black")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return True


def misclassified(probabilities: np.ndarray, y: np.ndarray,
                  limit: int = MAX_SHOWN) -> dict[str, Any]:
    """The wrongly classified rows: their count and up to ``limit`` of them, the most
    confident mistakes first (ties by row index)."""
    pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    confidence = probabilities[wrong, pred[wrong]]
    order = wrong[np.lexsort((wrong, -confidence))][:limit]
    return {"count": int(len(wrong)),
            "shown": [{"index": int(i), "true": int(y[i]), "predicted": int(pred[i]),
                       "confidence": float(probabilities[i, pred[i]])} for i in order]}


def plot_misclassified(x: np.ndarray, shown: list[dict[str, Any]], path: Path,
                       log: Callable[[str], None] = print) -> bool:
    """Draw the shown mistakes as a grid of digits titled "pred P / true T"; False (and
    said why) when there is nothing to draw, the rows are not square images or
    matplotlib is missing."""
    side = int(round(np.sqrt(x.shape[1]))) if x.ndim == 2 else 0
    if not shown:
        log(f"no misclassified test rows: {MISCLASSIFIED_PLOT} is not written")
        return False
    if side * side != x.shape[1]:
        log(f"rows of {x.shape[1]} values are not square images: "
            f"{MISCLASSIFIED_PLOT} is not written")
        return False
    try:
        import matplotlib
    except ImportError:
        log(f"matplotlib is not installed: {MISCLASSIFIED_PLOT} is not written")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(5, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.7 * rows), dpi=100,
                             squeeze=False)
    try:
        for ax in axes.flat:
            ax.axis("off")
        for ax, item in zip(axes.flat, shown):
            ax.imshow(x[item["index"]].reshape(side, side), cmap="gray_r")
            ax.set_title(f"pred {item['predicted']} / true {item['true']}", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return True


# ----------------------------------------------------------------------------- the job


def ensure_requirements(module: str = "pyarrow", folder: Path = HERE,
                        run: Callable[..., Any] = subprocess.run,
                        log: Callable[[str], None] = print) -> None:
    """Install ``folder/requirements.txt`` when ``module`` cannot be imported (the
    SageMaker TensorFlow image may lack pyarrow)."""
    try:
        importlib.import_module(module)
        return
    except ImportError:
        pass
    requirements = folder / "requirements.txt"
    if not requirements.is_file():
        raise InputError(requirements, f"{module} is not installed and there is no "
                         "requirements file", expected=f"a requirements.txt listing {module}")
    log(f"{module} is not installed: pip install -r {requirements}")
    done = run([sys.executable, "-m", "pip", "install", "--quiet", "-r", str(requirements)])
    if done.returncode != 0:
        raise InputError(requirements, f"pip could not install the requirements "
                         f"(exit code {done.returncode})", expected=f"{module} installable")
    importlib.invalidate_caches()


def _load_split(test: Path) -> tuple[np.ndarray, np.ndarray]:
    if __package__:  # imported as the ``model`` package (tests, harness tools)
        from .data import DataFormatError, load_split
    else:  # run as a script (the code folder is the working dir and on sys.path); a
        # module missing from the code folder fails here, as it fails in the container
        from data import DataFormatError, load_split
    try:
        return load_split(test)
    except DataFormatError as e:
        raise InputError(e.directory, e.problem, field=e.field, expected=e.expected,
                         got=e.got) from None


def _write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary sibling and rename: a crash leaves no partial file.
    ``write`` returning False means it wrote nothing."""
    tmp = path.with_name(f".tmp-{path.name}")  # the suffix stays (matplotlib reads it)
    try:
        if write(tmp) is not False:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def evaluate(model: Path, test: Path, output: Path,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score ``model/model.tar.gz`` on the split ``test``; write the report to ``output``."""
    archive = model / ARCHIVE if model.is_dir() or not model.name.endswith(".tar.gz") \
        else model
    report_path = output / REPORT
    if report_path.exists():
        raise InputError(report_path, "the output already holds an evaluation; refusing to "
                         "overwrite it", expected="an empty --output folder")
    x, y = _load_split(test)
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        version, version_dir = extract_model(archive, Path(tmp))
        log(f"model version {version} from {archive}: {len(y)} test examples from {test}")
        probabilities = predict(version_dir, x)
    check_labels(y, probabilities.shape[1], test)
    result = score(probabilities, y)
    cm = result["confusion_matrix"]
    mistakes = misclassified(probabilities, y)
    report = {"metrics": result["metrics"], "per_class": result["per_class"],
              "confusion_matrix": cm.tolist(), "count": int(len(y)),
              "model_version": int(version), "misclassified": mistakes}
    output.mkdir(parents=True, exist_ok=True)
    title = f"accuracy {report['metrics']['accuracy']:.4f} (n={len(y)})"
    _write(output / PLOT, lambda p: plot_confusion_matrix(cm, p, title, log))
    _write(output / MISCLASSIFIED_PLOT,
           lambda p: plot_misclassified(x, mistakes["shown"], p, log))
    _write(report_path, lambda p: p.write_text(json.dumps(report, indent=2) + "\n"))
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate a SavedModel archive on a test split "
                                "(SageMaker Processing job script).")
    p.add_argument("--model", required=True, type=Path,
                   help=f"folder holding {ARCHIVE} (or the archive itself)")
    p.add_argument("--test", required=True, type=Path,
                   help="folder of the test split's Parquet part files")
    p.add_argument("--output", required=True, type=Path,
                   help=f"folder to write {REPORT}, {PLOT} and {MISCLASSIFIED_PLOT} to")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # argparse exits 2 naming a missing argument
    try:
        ensure_requirements()
        report = evaluate(args.model, args.test, args.output,
                          log=lambda m: print(m, flush=True))
    except InputError as e:  # bad input: one clear line, no traceback
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 2
    for name in METRICS:
        print(f"{name}={report['metrics'][name]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
