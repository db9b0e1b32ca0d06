"""Local backend for ``train``: execute a SageMaker ``CreateTrainingJob`` request in-process.

Does what the SageMaker TensorFlow training container does in script mode: unpack
``sourcedir.tar.gz``, set the ``SM_*`` environment, run the entry point with the
hyperparameters as ``--name value`` arguments, apply the MetricDefinitions to its log
lines, and pack ``model.tar.gz`` / ``output.tar.gz`` under
``<S3OutputPath>/<TrainingJobName>/output/``. The job directory appears only when the
job succeeds.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import uris
from harness.archives import extract_archive, pack_directory
from harness.errors import DataError, HarnessError, StepFailed
from harness.metrics import MetricParser
from harness.stages import StageContext, StageRunner, required_field
from harness.storage import atomic_dir
from local_runners.script_process import ScriptFailed, run_script

HOST = "algo-1"


def _required(request: dict[str, Any], *path: str) -> Any:
    return required_field(request, *path, what="the training request",
                          expected="a SageMaker CreateTrainingJob request "
                          "(harness.steps.TrainingStep)")


def _hp_value(text: str) -> Any:
    """SM_HPS carries JSON values, as the SageMaker training toolkit decodes them."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


class LocalTrainingRunner(StageRunner):
    kind = "train"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        name = _required(request, "TrainingJobName")
        hps: dict[str, str] = {k: str(v) for k, v in _required(request, "HyperParameters").items()}
        program = _required(request, "HyperParameters", "sagemaker_program")
        submit = _required(request, "HyperParameters", "sagemaker_submit_directory")
        output_path = _required(request, "OutputDataConfig", "S3OutputPath")
        definitions = request.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
        parser = MetricParser(definitions)

        job_root = uris.local_path(output_path) / name
        if job_root.exists():
            raise StepFailed("train", f"training job name '{name}' is already used: its output "
                             "exists", file=str(job_root),
                             hint="job names must be unique; start a new run")
        channels = self._channels(request, name)
        sourcedir = uris.local_path(submit)
        if not sourcedir.is_file():
            raise StepFailed("train", f"training job {name} failed: the code package is "
                             "missing", file=str(sourcedir),
                             expected="sourcedir.tar.gz (harness.archives.pack_source_dir)")
        epochs = self._int(hps.get("epochs"))

        start = time.time()
        ctx.log.info("training job %s: program %s from %s", name, program, submit)
        with atomic_dir(job_root) as job:
            source = job / "source"
            self._extract(sourcedir, source, name)
            if not (source / program).is_file():
                raise StepFailed("train", f"training job {name} failed: entry point "
                                 f"'{program}' is not in the code package", file=str(sourcedir),
                                 field="HyperParameters.sagemaker_program",
                                 expected="a file at the root of sourcedir.tar.gz")
            if (source / "requirements.txt").exists():
                ctx.log.info("requirements.txt: installed by the SageMaker container in the "
                             "cloud; the local backend uses this environment's packages")
            model_dir, data_dir = job / "model", job / "output" / "data"
            model_dir.mkdir()
            data_dir.mkdir(parents=True)
            env = self._environment(hps, channels, program, submit, model_dir, data_dir, job)
            argv = [str(source / program)]
            for key in sorted(k for k in hps if not k.startswith("sagemaker_")):
                argv += [f"--{key}", hps[key]]
            self._execute(name, source, program, env, argv, parser, epochs, ctx)
            pack_directory(model_dir, job / "output" / "model.tar.gz", allow_empty=True)
            pack_directory(data_dir, job / "output" / "output.tar.gz", allow_empty=True)
        end = time.time()

        model_uri = uris.join(output_path, name, "output", "model.tar.gz")
        ctx.log.info("training job %s completed in %.1f s: %s", name, end - start, model_uri)
        return {
            "TrainingJobName": name,
            "TrainingJobArn": f"arn:aws:sagemaker:local:000000000000:training-job/{name}",
            "TrainingJobStatus": "Completed",
            "SecondaryStatus": "Completed",
            "HyperParameters": dict(request["HyperParameters"]),
            "AlgorithmSpecification": request.get("AlgorithmSpecification", {}),
            "InputDataConfig": request.get("InputDataConfig", []),
            "OutputDataConfig": request["OutputDataConfig"],
            "ResourceConfig": request.get("ResourceConfig", {}),
            "StoppingCondition": request.get("StoppingCondition", {}),
            "ModelArtifacts": {"S3ModelArtifacts": model_uri},
            "FinalMetricDataList": parser.final(),
            "TrainingStartTime": _iso(start),
            "TrainingEndTime": _iso(end),
            "TrainingTimeInSeconds": max(1, round(end - start)),
        }

    # -- pieces ---------------------------------------------------------------------------

    @staticmethod
    def _int(text: str | None) -> int | None:
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None

    @staticmethod
    def _channels(request: dict[str, Any], job: str) -> dict[str, Path]:
        channels: dict[str, Path] = {}
        for i, ch in enumerate(request.get("InputDataConfig", [])):
            field = f"InputDataConfig[{i}]"
            try:
                cname = ch["ChannelName"]
                uri = ch["DataSource"]["S3DataSource"]["S3Uri"]
            except (KeyError, TypeError):
                raise HarnessError("channel lacks ChannelName or DataSource.S3DataSource.S3Uri",
                                   field=field, expected="a SageMaker channel") from None
            path = uris.local_path(uri)
            if not path.exists():
                raise StepFailed("train", f"training job {job} failed: no data for channel "
                                 f"'{cname}'", file=str(path), field=f"{field}.S3Uri",
                                 expected="an existing data prefix (run the etl step first)")
            channels[cname] = path
        return channels

    @staticmethod
    def _extract(sourcedir: Path, dest: Path, job: str) -> None:
        dest.mkdir()
        try:
            extract_archive(sourcedir, dest, what="code package", expected="sourcedir.tar.gz")
        except DataError as e:
            raise StepFailed("train", f"training job {job} failed: {e.problem}", file=e.file,
                             expected=e.expected, got=e.got) from None

    @staticmethod
    def _environment(hps: dict[str, str], channels: dict[str, Path], program: str, submit: str,
                     model_dir: Path, data_dir: Path, job: Path) -> dict[str, str]:
        user_hps = {k: _hp_value(v) for k, v in hps.items() if not k.startswith("sagemaker_")}
        env = {
            "SM_MODEL_DIR": str(model_dir),
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HPS": json.dumps(user_hps, sort_keys=True),
            "SM_OUTPUT_DATA_DIR": str(data_dir),
            "SM_OUTPUT_DIR": str(data_dir.parent),
            "SM_NUM_CPUS": str(os.cpu_count() or 1),
            "SM_NUM_GPUS": "0",
            "SM_HOSTS": json.dumps([HOST]),
            "SM_CURRENT_HOST": HOST,
            "SM_USER_ENTRY_POINT": program,
            "SM_MODULE_DIR": submit,
            "SM_MODULE_NAME": program.rsplit(".", 1)[0],
        }
        for cname, path in channels.items():
            env[f"SM_CHANNEL_{cname.upper()}"] = str(path)
        return env

    @staticmethod
    def _execute(name: str, source: Path, program: str, env: dict[str, str], argv: list[str],
                 parser: MetricParser, epochs: int | None, ctx: StageContext) -> None:
        with ctx.progress.task("train", total=epochs) as task:
            def on_line(line: str) -> None:
                ctx.log.info("%s", line)
                parser.feed(line)
                if line.startswith("epoch="):
                    task.advance(1)
                    val = parser.latest("validation:accuracy")
                    if val is not None:
                        task.update(description=f"  train  val_accuracy={val:.4f}")

            try:
                run_script(source / program, argv, env, source=source, cwd=source,
                           on_stdout=on_line, on_stderr=on_line)
            except ScriptFailed as e:
                if e.error is None:
                    raise StepFailed("train", f"training job {name} failed: {e.detail}",
                                     hint=f"exit code {e.exit_code}; the step log has the "
                                     "full output") from None
                # the script's own error, reported like SageMaker does
                ctx.log.error("%s", e.traceback)
                raise StepFailed("train", f"training job {name} failed: "
                                 f"{e.detail}") from e.error
