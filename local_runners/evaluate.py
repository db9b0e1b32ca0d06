"""Local backend for ``evaluate``: score the trained SavedModel on the test split.

Loads the newest numeric version from ``model.tar.gz`` and calls its ``serving_default``
signature -- the same entry point the endpoint serves -- so the score is the score of
the artefact that will be deployed. Writes ``evaluation.json`` and
``confusion_matrix.png`` under ``OutputUri`` (atomically). The gate itself is applied by
the executor from ``Passed``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from harness import uris
from harness.archives import extract_archive, newest_model_version
from harness.errors import DataError, HarnessError
from harness.stages import StageContext, StageRunner
from harness.storage import atomic_dir, write_json_atomic
from model.data import DataFormatError, load_split

METRICS = ("accuracy", "loss", "macro_precision", "macro_recall")
GATE_METRICS = ("accuracy", "macro_precision", "macro_recall")
BATCH = 1000
EPS = 1e-7


def _required(request: dict[str, Any], key: str) -> Any:
    if key not in request:
        raise HarnessError("the evaluate request lacks a required field", field=key,
                           expected="ModelArtifacts, TestDataUri, OutputUri, Metric, Threshold "
                           "(harness.requests.evaluate_request)")
    return request[key]


def extract_model(archive: Path, dest: Path) -> Path:
    """Unpack model.tar.gz; return the newest ``<version>/`` directory in it."""
    extract_archive(archive, dest, what="model archive",
                    expected="the training job's output/model.tar.gz")
    return newest_model_version(dest)[1]


def predict(version_dir: Path, x: np.ndarray) -> np.ndarray:
    """Class probabilities from the SavedModel's serving_default signature, in batches."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as e:  # TF raises several unrelated types for a bad SavedModel
        raise DataError(f"cannot load the SavedModel ({type(e).__name__}: {e})",
                        file=str(version_dir)) from None
    sig = loaded.signatures.get("serving_default")
    if sig is None:
        raise DataError("the SavedModel has no serving_default signature", file=str(version_dir),
                        expected="signature 'serving_default'",
                        got=", ".join(loaded.signatures) or "no signatures")
    inputs = sig.structured_input_signature[1]
    if "pixels" not in inputs or "probabilities" not in sig.structured_outputs:
        raise DataError("serving_default has the wrong inputs/outputs", file=str(version_dir),
                        expected="input 'pixels' -> output 'probabilities'",
                        got=f"inputs {sorted(inputs)}, outputs {sorted(sig.structured_outputs)}")
    width = inputs["pixels"].shape[-1]
    if width is not None and width != x.shape[1]:
        raise DataError("test data does not fit the model input", file=str(version_dir),
                        field="pixels", expected=f"{width} values per row", got=x.shape[1])
    out = [sig(pixels=tf.constant(x[i:i + BATCH]))["probabilities"].numpy()
           for i in range(0, len(x), BATCH)]
    return np.concatenate(out).astype(np.float64)


def score(probabilities: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy, mean cross-entropy, per-class and macro precision/recall, confusion matrix."""
    n, k = probabilities.shape
    pred = probabilities.argmax(axis=1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    present = support > 0  # macro averages over the classes present in the test data
    loss = float(-np.log(np.clip(probabilities[np.arange(n), y], EPS, 1.0)).mean())
    return {
        "metrics": {
            "accuracy": float(tp.sum() / n),
            "loss": loss,
            "macro_precision": float(precision[present].mean()),
            "macro_recall": float(recall[present].mean()),
        },
        "per_class": [{"Class": c, "Precision": float(precision[c]), "Recall": float(recall[c]),
                       "Support": int(support[c])} for c in range(k)],
        "confusion_matrix": cm,
    }


def plot_confusion_matrix(cm: np.ndarray, path: Path, title: str) -> None:
    import matplotlib
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


class LocalEvaluateRunner(StageRunner):
    kind = "evaluate"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        archive = uris.local_path(_required(request, "ModelArtifacts"))
        test_uri = _required(request, "TestDataUri")
        output_uri = _required(request, "OutputUri")
        metric = _required(request, "Metric")
        threshold = float(_required(request, "Threshold"))
        if metric not in GATE_METRICS:
            raise HarnessError("unknown evaluation metric", field="Metric",
                               expected=" | ".join(GATE_METRICS), got=metric)
        out_dir = uris.local_path(output_uri)
        if out_dir.exists():
            raise HarnessError("evaluation output already exists; refusing to overwrite it",
                               file=str(out_dir), hint="start a new run")
        test_dir = uris.local_path(test_uri)
        try:
            x, y = load_split(test_dir)
        except DataFormatError as e:
            raise DataError(e.problem, file=e.directory, field=e.field, expected=e.expected,
                            got=e.got) from None

        with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
            version_dir = extract_model(archive, Path(tmp))
            ctx.log.info("evaluating %s (version %s) on %d examples from %s",
                         archive, version_dir.name, len(y), test_uri)
            probabilities = predict(version_dir, x)
        k = probabilities.shape[1]
        if y.min() < 0 or y.max() >= k:
            raise DataError("labels outside the model's classes", file=str(test_dir),
                            field="label", expected=f"values in [0, {k - 1}]",
                            got=int(y.max() if y.max() >= k else y.min()))
        result = score(probabilities, y)
        value = result["metrics"][metric]
        passed = bool(value >= threshold)
        report = {
            "ModelArtifacts": request["ModelArtifacts"],
            "ModelVersion": int(version_dir.name),
            "TestDataUri": test_uri,
            "Count": int(len(y)),
            "Metrics": result["metrics"],
            "PerClass": result["per_class"],
            "ConfusionMatrix": result["confusion_matrix"].tolist(),
            "Metric": metric,
            "Threshold": threshold,
            "Passed": passed,
        }
        with atomic_dir(out_dir) as tmp_out:
            write_json_atomic(tmp_out / "evaluation.json", report)
            plot_confusion_matrix(result["confusion_matrix"], tmp_out / "confusion_matrix.png",
                                  f"accuracy {result['metrics']['accuracy']:.4f} (n={len(y)})")
        ctx.log.info("%s = %.4f (threshold %.4f): %s", metric, value, threshold,
                     "passed" if passed else "below threshold")
        return {
            "EvaluationUri": uris.join(output_uri, "evaluation.json"),
            "PlotUri": uris.join(output_uri, "confusion_matrix.png"),
            "Metrics": result["metrics"],
            "PerClass": result["per_class"],
            "Metric": metric,
            "Threshold": threshold,
            "Passed": passed,
            "Count": int(len(y)),
        }
