"""SageMaker TensorFlow script-mode entry point: train the digit classifier.

SageMaker (and the local trainer) run ``python train.py --epochs 6 ... --model_dir s3://...``
with the ``SM_*`` environment set. The script streams the Parquet splits from the channel
directories through tf.data (model/data.py: memory stays flat as the data grows), prints
one metric line per epoch (matched by the job's MetricDefinitions), exports a SavedModel
to ``$SM_MODEL_DIR/1/`` (with the drift monitor's baseline of the validation split in
``1/assets.extra/drift_baseline/``) and writes ``$SM_OUTPUT_DATA_DIR/metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__:  # imported as the ``model`` package (tests, harness tools)
    from .data import count_rows, head_rows, raise_data_errors, stream_split
    from .drift_baseline import BASELINE_DIR, write_baseline
    from .hyperparameters import add_arguments, problems
    from .multi_worker import (SHARDED, apply_keras_workaround, channel_distribution,
                               fit_on_shards, is_multi_worker, predict_on_this_worker)
    from .network import build_model, classifier_of, export_saved_model
else:  # run as a script (SageMaker: the source dir is the working dir and on sys.path);
    # a module missing from sourcedir.tar.gz fails here, as it fails on SageMaker
    from data import count_rows, head_rows, raise_data_errors, stream_split
    from drift_baseline import BASELINE_DIR, write_baseline
    from hyperparameters import add_arguments, problems
    from multi_worker import (SHARDED, apply_keras_workaround, channel_distribution,
                              fit_on_shards, is_multi_worker, predict_on_this_worker)
    from network import build_model, classifier_of, export_saved_model


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the digit classifier (SageMaker script mode).")
    add_arguments(p)
    p.add_argument("--model_dir", default=None,
                   help="passed by the TensorFlow container (an S3 URI in the cloud); the "
                   "SavedModel goes to --sm_model_dir, which SageMaker uploads")
    p.add_argument("--sm_model_dir", default=_env("SM_MODEL_DIR"))
    p.add_argument("--train", default=_env("SM_CHANNEL_TRAIN"))
    p.add_argument("--validation", default=_env("SM_CHANNEL_VALIDATION"))
    p.add_argument("--test", default=_env("SM_CHANNEL_TEST"))
    p.add_argument("--output_data_dir", default=_env("SM_OUTPUT_DATA_DIR"))
    args = p.parse_args(argv)  # unknown arguments: argparse exits 2 naming them
    for problem in problems(args):
        p.error(problem)
    if not args.train:
        p.error("no training data: the 'train' channel is missing "
                "(set SM_CHANNEL_TRAIN or pass --train DIR)")
    if not args.sm_model_dir:
        p.error("no model directory: set SM_MODEL_DIR or pass --sm_model_dir DIR")
    return args


# The drift baseline's sample of the validation split: its statistics keep at most 2,000
# quantiles a feature (drift_baseline.QUANTILES) and its class proportions, which 10,000
# rows give closely; the split's first rows are a random sample (prepare shuffles splits).
BASELINE_ROWS = 10_000
EVAL_BATCH = 512


def _stream(directory: str, args: argparse.Namespace, *, shuffle: bool, batch_size: int):
    """A split as a tf.data stream of checked batches (model/data.py), and its row count
    (from the Parquet footers: no data read)."""
    dataset = stream_split(directory, batch_size=batch_size, shuffle=shuffle, seed=args.seed,
                           expected_pixels=args.image_height * args.image_width,
                           num_classes=args.num_classes)
    return dataset, count_rows(directory)


def _fmt(logs: dict, keys: list[tuple[str, str]]) -> str:
    return " ".join(f"{label}={float(logs[key]):.4f}" for key, label in keys if key in logs)


def _drift_baseline(model, validation, export_dir: Path, args: argparse.Namespace) -> None:
    """The drift monitor's baseline (Model Monitor's statistics.json and constraints.json)
    from the validation split's first BASELINE_ROWS images (read from ``args.validation``;
    ``validation`` is its stream, None without the channel) and the exported classifier's
    probabilities, beside the model in ``<version>/assets.extra/drift_baseline/``: the
    endpoint's model carries the baseline its traffic is checked against."""
    if validation is None:
        print("drift baseline: skipped (no validation channel)", flush=True)
        return
    images, _ = head_rows(args.validation, BASELINE_ROWS,
                          expected_pixels=args.image_height * args.image_width,
                          num_classes=args.num_classes)
    probabilities = classifier_of(model).predict(images, batch_size=512, verbose=0)
    paths = write_baseline(Path(export_dir) / BASELINE_DIR, images, probabilities,
                           image_shape=(args.image_height, args.image_width))
    print(f"drift baseline: {len(images)} validation images -> "
          f"{paths['statistics'].parent}", flush=True)


def _cluster() -> tuple[list[str], str]:
    """The training cluster as SageMaker describes it (one host locally)."""
    hosts = json.loads(os.environ.get("SM_HOSTS") or '["algo-1"]')
    return hosts, os.environ.get("SM_CURRENT_HOST") or hosts[0]


def _strategy(hosts: list[str]):
    """MultiWorkerMirroredStrategy on a multi-instance job (the TensorFlow container sets
    TF_CONFIG when the job enables it), else the default single-worker strategy."""
    import tensorflow as tf
    if len(hosts) > 1:
        if "TF_CONFIG" in os.environ:
            apply_keras_workaround()  # keras#20585: Keras 3's fit fails under MWMS otherwise
            return tf.distribute.MultiWorkerMirroredStrategy()
        print(f"warning: {len(hosts)} hosts but no TF_CONFIG: each host trains on its own "
              "(set sagemaker_multi_worker_mirrored_strategy_enabled)", flush=True)
    return tf.distribute.get_strategy()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import keras  # imported late: argument errors come back fast

    hosts, current_host = _cluster()
    strategy = _strategy(hosts)
    keras.utils.set_random_seed(args.seed)
    train, train_rows = _stream(args.train, args, shuffle=True, batch_size=args.batch_size)
    validation, validation_rows = (_stream(args.validation, args, shuffle=False,
                                           batch_size=EVAL_BATCH)
                                   if args.validation else (None, 0))
    print(f"data: train={train_rows} validation={validation_rows} "
          f"image={args.image_height}x{args.image_width} classes={args.num_classes}", flush=True)

    with strategy.scope():
        model = build_model(args.image_height, args.image_width, args.num_classes,
                            learning_rate=args.learning_rate, shift=args.shift,
                            units=args.units, dropout=args.dropout)
    if is_multi_worker(strategy) and channel_distribution("train") == SHARDED:
        fit_on_shards(model, strategy, seed=args.seed)  # same steps on every worker's shard
    keys = [("loss", "train_loss"), ("accuracy", "train_accuracy"),
            ("val_loss", "val_loss"), ("val_accuracy", "val_accuracy")]

    class EpochLine(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"epoch={epoch + 1}/{args.epochs} {_fmt(logs or {}, keys)}", flush=True)

    started = time.perf_counter()
    with raise_data_errors():  # a bad row met while streaming: its DataFormatError
        history = model.fit(train, epochs=args.epochs, validation_data=validation,
                            shuffle=False,  # the stream shuffles (files, rows) itself
                            verbose=0, callbacks=[EpochLine()])
    fit_seconds = time.perf_counter() - started

    metrics = {k: float(v[-1]) for k, v in history.history.items()}
    if args.test:
        test, _ = _stream(args.test, args, shuffle=False, batch_size=EVAL_BATCH)
        with raise_data_errors():
            test_loss, test_accuracy = model.evaluate(test, verbose=0)
        metrics.update(test_loss=float(test_loss), test_accuracy=float(test_accuracy))
        print(f"test_loss={test_loss:.4f} test_accuracy={test_accuracy:.4f}", flush=True)

    if current_host == hosts[0]:  # the chief exports what SageMaker uploads
        export_dir = export_saved_model(model, args.sm_model_dir, version=1)
    else:  # other workers take part in the save's collectives, then discard it
        import shutil
        import tempfile
        scratch = tempfile.mkdtemp(prefix="worker-export-")
        export_dir = export_saved_model(model, scratch, version=1)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"exported SavedModel to {export_dir}", flush=True)
    if current_host == hosts[0]:
        if is_multi_worker(strategy):
            predict_on_this_worker(model)  # the other workers are done: no collectives
        _drift_baseline(model, validation, export_dir, args)
    summary = {
        "metrics": metrics,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "fit_seconds": fit_seconds,
        "train_examples": int(train_rows),
        "images_per_second": train_rows * args.epochs / fit_seconds if fit_seconds else None,
        "hyperparameters": {k: v for k, v in vars(args).items()
                            if k not in ("train", "validation", "test", "output_data_dir",
                                         "sm_model_dir", "model_dir")},
    }
    if args.output_data_dir:
        out = Path(args.output_data_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".metrics.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, out / "metrics.json")
    return summary


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, FileExistsError) as e:  # data/contract errors: one clear line, exit 1
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
