"""The tiny tuning job of the tuner's tests: a pure-Python training script (no
TensorFlow) whose validation accuracy is ``accuracy(learning_rate, optimizer, epoch)``,
which peaks at a learning rate of 0.01 with adam, and ``Tuning``, one tuning job of it."""
from __future__ import annotations

import inspect
import json
import math
import re
import time
from pathlib import Path

from support import RecordingProgress
from pipeline_support import pipeline, stage_context

from harness import uris
from harness.archives import pack_source_dir
from harness.local_setup import LocalImages
from harness.placeholders import resolve, run_path
from harness.steps.base import BuildContext
from harness.steps.training import TrainingStep
from harness.steps.tuning import TuningStep
from local_runners.train_process import decode_value
from local_runners.tune import LocalTuningRunner

METRIC = {"Name": "validation:accuracy", "Regex": r"val_accuracy=([0-9.eE+-]+)"}


def accuracy(learning_rate, optimizer, epoch):
    peak = 0.95 - 0.1 * (math.log10(learning_rate) + 2) ** 2 + (0.02 if optimizer == "adam"
                                                                else 0.0)
    return peak * (1 - 0.5 ** epoch)


SCRIPT = """\
import argparse, json, math, os, time
from pathlib import Path

{formula}

p = argparse.ArgumentParser()
p.add_argument("--learning_rate", type=float, required=True)
p.add_argument("--optimizer", default="sgd")
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--seconds_per_epoch", type=float, default=0.0)
p.add_argument("--crash_above", type=float, default=None)
p.add_argument("--model_dir")
p.add_argument("--_tuning_objective_metric", required=True)
args = p.parse_args()
print(f"objective={{args._tuning_objective_metric}} threads={{os.environ['OMP_NUM_THREADS']}}"
      f"/{{os.environ['TF_NUM_INTRAOP_THREADS']}}/{{os.environ['TF_NUM_INTEROP_THREADS']}}",
      flush=True)
for epoch in range(1, args.epochs + 1):
    if args.crash_above is not None and args.learning_rate > args.crash_above and epoch == 2:
        raise RuntimeError(f"diverged at learning rate {{args.learning_rate}}")
    value = accuracy(args.learning_rate, args.optimizer, epoch)
    print(f"epoch={{epoch}}/{{args.epochs}} val_accuracy={{value:.6f}}", flush=True)
    time.sleep(args.seconds_per_epoch)
Path(os.environ["SM_MODEL_DIR"], "model.json").write_text(json.dumps(
    {{"learning_rate": args.learning_rate, "optimizer": args.optimizer}}))
"""


Recorder = RecordingProgress  # ctx.progress and ctx.announce of a test


class Tuning:
    """One tuning job of the tiny script in ``tmp``: its request, context and output."""

    def __init__(self, tmp: Path, run_id: str = "t1", *, ranges, hyperparameters=None,
                 regex=METRIC["Regex"], runs: Path | None = None, **tuning):
        self.tmp, self.run_id = tmp, run_id
        src = tmp / "src"
        src.mkdir()
        (src / "train.py").write_text(SCRIPT.format(formula=inspect.getsource(accuracy)))
        (tmp / "data" / "train").mkdir(parents=True)
        training = TrainingStep(
            "train", job_name="tiny-train", source_dir=src, entry_point="train.py",
            output_path=run_path("training"), inputs={"train": run_path("data", "train")},
            hyperparameters={"epochs": 3, **(hyperparameters or {})},
            metric_definitions=[{"Name": METRIC["Name"], "Regex": regex}])
        args = dict(objective_metric=METRIC["Name"], max_jobs=4, max_parallel_jobs=1,
                    random_seed=7)
        args.update(tuning)
        self.step = TuningStep("tune", training=training, job_name="tiny-tune",
                               parameter_ranges=ranges, **args)
        base = uris.file_uri(tmp)
        pack_source_dir(src, tmp / "code" / "train" / "sourcedir.tar.gz")
        self.request = resolve(self.step.request(BuildContext("local", LocalImages())),
                               {"RunId": run_id, "BaseUri": base, "CodeUri": f"{base}/code"}, "tune")
        self.name = self.request["HyperParameterTuningJobName"]
        runs = runs or tmp / "runs"
        cfg, _ = pipeline(runs_dir=str(runs))
        self.recorder = Recorder()
        self.ctx = stage_context(cfg, "tune", run_id, progress=self.recorder)
        self.ctx.announce = self.recorder.announce
        self.records = runs / run_id / "steps" / "tune" / "trials"
        self.training = tmp / "training"
        self.output = None
        self.seconds = None

    def run(self, grace_s: float | None = None):
        runner = LocalTuningRunner()
        if grace_s is not None:
            runner.stop_grace_s = grace_s
        t0 = time.perf_counter()
        self.output = runner.run(self.request, self.ctx)
        self.seconds = time.perf_counter() - t0
        return self.output

    def record(self, trial: str, file: str):
        path = self.records / trial / file
        return json.loads(path.read_text()) if file.endswith(".json") else path.read_text()

    def epochs_run(self) -> int:
        return sum(len(re.findall(r"^epoch=\d+/", self.record(d.name, "log.txt"), re.M))
                   for d in self.records.iterdir())


def tuned_accuracy(summary, epoch: int = 3) -> float:
    # decoded as the training toolkit decodes them (a categorical value is '"adam"')
    hp = {k: decode_value(v) for k, v in summary["TunedHyperParameters"].items()}
    return accuracy(float(hp["learning_rate"]), hp.get("optimizer", "sgd"), epoch)


def tiny_tuning_workflow(tmp: Path, runs: Path, ranges, *, hyperparameters=None, **tuning):
    """A workflow of one tuning step over the tiny script (2 epochs, 2 trials at a time
    unless ``tuning`` says otherwise) and its configuration: runs in ``runs``."""
    from harness.config import load_config
    from harness.workflow import Workflow

    src = tmp / "src"
    if not src.exists():
        src.mkdir()
        (src / "train.py").write_text(SCRIPT.format(formula=inspect.getsource(accuracy)))
        (tmp / "data").mkdir()
    training = TrainingStep("train", job_name="tiny-train", source_dir=src,
                            entry_point="train.py", output_path=run_path("training"),
                            inputs={"train": uris.file_uri(tmp / "data")},
                            hyperparameters={"epochs": 2, **(hyperparameters or {})},
                            metric_definitions=[METRIC])
    tune = TuningStep("tune", training=training, job_name="tiny-tune",
                      objective_metric=METRIC["Name"], parameter_ranges=ranges,
                      **{"max_jobs": 2, "max_parallel_jobs": 2, **tuning})
    return (Workflow("tiny-tuning", tune),
            load_config(overrides={"runs_dir": str(runs)}))
