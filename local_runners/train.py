"""Local backend for ``train``: execute a SageMaker ``CreateTrainingJob`` request.

Does what the SageMaker TensorFlow training image does in script mode (its entry point
is the ``sagemaker-training`` toolkit): unpack ``sourcedir.tar.gz``, decode the
JSON-encoded hyperparameters, set the ``SM_*`` environment and run the entry point in a
new Python process -- ``python train.py --name value ...`` with only the source dir and
the framework on ``sys.path`` (``local_runners.train_process``) -- apply the
MetricDefinitions to its log lines, and pack ``model.tar.gz`` / ``output.tar.gz`` under
``<S3OutputPath>/<TrainingJobName>/output/``. The job directory appears only when the
job succeeds; an interrupt stops the process and discards it.

``ResourceConfig.InstanceCount`` N > 1 runs N processes, ``algo-1`` .. ``algo-N``, on
loopback, with ``TF_CONFIG`` when the job enables MultiWorkerMirroredStrategy and each
``ShardedByS3Key`` channel split between them (``local_runners.train_workers``); the
chief's (``algo-1``) model dir is the job's model.
"""
from __future__ import annotations

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
from local_runners import source_requirements
from local_runners import train_process as tp
from local_runners import train_workers as tw

HOST = tp.HOST


def _required(request: dict[str, Any], *path: str) -> Any:
    return required_field(request, *path, what="the training request",
                          expected="a SageMaker CreateTrainingJob request "
                          "(harness.steps.TrainingStep)")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _prewarm_tensorflow() -> None:
    """Import TensorFlow in this process while the job's own process trains (this one
    waits anyway): the evaluation and the endpoint that follow load it in-process.
    The runner's callers turn it off where nothing follows in the process (a tuning
    trial) or where the process must stay as it was (the emulator: importing TensorFlow
    sets environment variables)."""
    import sys
    import threading

    if "tensorflow" in sys.modules:
        return

    def load() -> None:
        try:
            import tensorflow  # noqa: F401
        except Exception:  # noqa: BLE001 - the step that needs it reports it
            pass

    threading.Thread(target=load, name="tensorflow-prewarm", daemon=True).start()


class LocalTrainingRunner(StageRunner):
    kind = "train"

    def __init__(self, prewarm: bool = True) -> None:
        # prewarm: import TensorFlow here while the job's process trains (the harness's
        # own evaluation and endpoint use it next); the emulator's bridge turns it off
        self.prewarm = prewarm

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        name = _required(request, "TrainingJobName")
        hps = tp.decode_hyperparameters(_required(request, "HyperParameters"))
        _required(request, "HyperParameters", "sagemaker_program")
        _required(request, "HyperParameters", "sagemaker_submit_directory")
        # JSON-encoded as the SageMaker SDK sends them ('"train.py"'); raw text works too
        program = str(hps["sagemaker_program"])
        submit = str(hps["sagemaker_submit_directory"])  # file:// (s3:// in the cloud)
        output_path = _required(request, "OutputDataConfig", "S3OutputPath")
        definitions = request.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
        parser = MetricParser(definitions)
        user_hps, framework_hps = tp.split_hyperparameters(hps)

        job_root = uris.local_path(output_path) / name
        if job_root.exists():
            raise StepFailed("train", f"training job name '{name}' is already used: its output "
                             "exists", file=str(job_root),
                             hint="job names must be unique; start a new run")
        channels = self._channels(request, name)
        sourcedir = uris.local_path(submit) if "://" in submit else Path(submit)
        if not sourcedir.is_file():
            raise StepFailed("train", f"training job {name} failed: the code package is "
                             "missing", file=str(sourcedir),
                             expected="sourcedir.tar.gz (harness.archives.pack_source_dir)")
        epochs = self._int(user_hps.get("epochs"))

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
            # the container pip-installs it before the job: here into a cached layer
            layers = source_requirements.install_layer(source, name, ctx.log)
            model_dir, data_dir = job / "model", job / "output" / "data"
            model_dir.mkdir()
            data_dir.mkdir(parents=True)
            resources = request.get("ResourceConfig") or {}
            content_types = {c.get("ChannelName"): c.get("ContentType", "")
                             for c in request.get("InputDataConfig", [])}
            dists = tw.distributions(request)

            def environment(**per_host: Any) -> dict[str, str]:
                return tp.toolkit_environment(
                    user_hps=user_hps, framework_hps=framework_hps, program=program,
                    module_dir=source, content_types=content_types, job_name=name,
                    instance_type=resources.get("InstanceType", "local"),
                    distributions=dists, **per_host)

            cmd = tp.command(program, tp.cmd_args(user_hps))
            count = self._instance_count(resources)
            if count == 1:
                env = tp.child_environment(environment(
                    channels=channels, model_dir=model_dir, output_data_dir=data_dir), source,
                    layers)
                self._execute(name, source, cmd, env, parser, epochs, ctx)
            else:  # one process per instance; only the chief's model dir is packed
                scratch = job / "workers"
                workers = tw.prepare_workers(
                    count=count, scratch=scratch, channels=channels, dists=dists,
                    model_dir=model_dir, output_data_dir=data_dir, source=source, job=name,
                    mwms=bool(framework_hps.get(tw.MWMS_FLAG)), environment=environment,
                    layers=layers)
                ctx.log.info("training job %s: %d instances (%s) on loopback%s", name, count,
                             ", ".join(w.host for w in workers),
                             "" if framework_hps.get(tw.MWMS_FLAG) else
                             f" without {tw.MWMS_FLAG}: each trains on its own")
                self._execute(name, source, cmd, workers, parser, epochs, ctx)
                tw.remove_scratch(scratch)
            self._check_model(model_dir, ctx)
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
    def _int(value: Any) -> int | None:
        try:
            return int(value) if value is not None and not isinstance(value, bool) else None
        except (TypeError, ValueError):
            return None

    @staticmethod
    def _instance_count(resources: dict[str, Any]) -> int:
        count = resources.get("InstanceCount", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise HarnessError("the instance count is a whole number of at least 1",
                               field="ResourceConfig.InstanceCount", got=count,
                               expected="1 or more (harness.steps.TrainingStep)")
        return count

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
    def _check_model(model_dir: Path, ctx: StageContext) -> None:
        """The TensorFlow training toolkit's ``_log_model_missing_warning``: the job still
        completes (SageMaker uploads what the model dir holds), with these warnings."""
        files = [p for p in model_dir.rglob("*") if p.is_file()]
        saved = [p for p in files if p.name in ("saved_model.pb", "saved_model.pbtxt")]
        for pb in saved:
            if not pb.parent.name.isdigit():
                ctx.log.warning("Your model will NOT be servable with SageMaker TensorFlow "
                                "Serving containers. The SavedModel bundle is under directory "
                                "\"%s\", not a numeric name.", pb.parent.name)
        if not files:
            ctx.log.warning("No model artifact is saved under path %s. Your training job will "
                            "not save any model files to S3.", model_dir)
        elif not saved:
            ctx.log.warning("Your model will NOT be servable with SageMaker TensorFlow Serving "
                            "container. The model artifact was not saved in the TensorFlow "
                            "SavedModel directory structure")

    def _execute(self, name: str, source: Path, cmd: list[str],
                 env_or_workers: dict[str, str] | list[tw.Worker], parser: MetricParser,
                 epochs: int | None, ctx: StageContext) -> None:
        """Run the job's process (or one per instance: ``[algo-i]`` prefixes the log lines
        of the non-chief instances; metrics and progress come from the chief's)."""
        with ctx.progress.task("train", total=epochs) as task:
            def on_line(line: str) -> None:
                ctx.log.info("%s", line)
                parser.feed(line)
                if line.startswith("epoch="):
                    task.advance(1)
                    val = parser.latest("validation:accuracy")
                    if val is not None:
                        task.update(description=f"  train  val_accuracy={val:.4f}")

            def on_worker_line(host: str, line: str) -> None:
                if host == tw.hosts(1)[0]:
                    on_line(line)
                else:
                    ctx.log.info("[%s] %s", host, line)

            try:
                if self.prewarm:
                    _prewarm_tensorflow()
                if isinstance(env_or_workers, list):
                    tw.run_workers(env_or_workers, cmd, source, on_worker_line)
                else:
                    tp.run_entry_point(cmd, env_or_workers, source, on_line)
            except tp.EntryPointFailed as e:
                # SageMaker's FailureReason: ExecuteUserScriptError, the exit code and the
                # script's last error line (its traceback is in the log above)
                ctx.log.error("training job %s: %s exited with code %s", name,
                              " ".join(cmd[2:]), e.exit_code)
                raise StepFailed("train", f"training job {name} failed: {e.detail}",
                                 hint=f"ExecuteUserScriptError: exit code {e.exit_code}; the "
                                 "step log has the script's output") from None
