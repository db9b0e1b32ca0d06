"""The local trainer runs a job as SageMaker's training toolkit does: the same request
run once by ``LocalTrainingRunner`` and once by ``sagemaker-training`` itself (the entry
point of SageMaker's framework training images) gives the same metrics; the job's process
sees only its source dir and the framework; hyperparameters are JSON-encoded as the
SageMaker SDK sends them and decoded as the toolkit decodes them."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support import LogLines, RecordingProgress
from test_train import make_job, processed, write_splits

from harness import uris
from harness.archives import newest_model_version
from harness.metrics import MetricParser
from local_runners import train_process as tp
from local_runners.train import LocalTrainingRunner

TOOLKIT = "sagemaker-training==5.1.4"
# Its imports on the training path beyond what the project's environment has; the rest
# (boto3, six, psutil, scipy, protobuf, werkzeug, paramiko, numpy) comes from there.
TOOLKIT_EXTRAS = ("retrying", "inotify_simple==1.2.1")
CACHE = Path.home() / ".cache" / "mlharness" / "sagemaker-training-5.1.4"


def test_hyperparameters_are_decoded_and_passed_as_the_toolkit_does():
    hps = tp.decode_hyperparameters({"sagemaker_program": '"train.py"', "epochs": "2",
                                     "flag": "true", "name": '"abc"', "raw": "not json",
                                     "lr": "0.003"})
    user, framework = tp.split_hyperparameters(hps)
    assert framework == {"sagemaker_program": "train.py"}
    assert tp.cmd_args(user) == ["--epochs", "2", "--flag", "True", "--lr", "0.003",
                                 "--name", "abc", "--raw", "not json"]
    env = tp.toolkit_environment(user_hps=user, framework_hps=framework, program="train.py",
                                 module_dir=Path("/job/source"),
                                 channels={"train": Path("/data/train")},
                                 content_types={}, model_dir=Path("/job/model"),
                                 output_data_dir=Path("/job/output/data"), job_name="j",
                                 instance_type="ml.m5.xlarge", num_cpus=2)
    assert json.loads(env["SM_HPS"]) == user and env["SM_HP_EPOCHS"] == "2"
    assert json.loads(env["SM_USER_ARGS"])[:2] == ["--epochs", "2"]
    assert env["SM_CHANNELS"] == '["train"]' and env["SM_CHANNEL_TRAIN"] == "/data/train"
    assert env["SM_MODULE_DIR"] == "/job/source" and env["SM_MODEL_DIR"] == "/job/model"
    assert env["SM_HOSTS"] == '["algo-1"]' and env["SM_CURRENT_HOST"] == "algo-1"
    assert env["SM_NUM_CPUS"] == "2" and env["SM_NUM_GPUS"] == "0"
    assert json.loads(env["SM_TRAINING_ENV"])["hyperparameters"] == user


def test_a_multi_instance_environment_is_the_toolkits():
    framework = {"sagemaker_program": "train.py",
                 "sagemaker_multi_worker_mirrored_strategy_enabled": True}
    env = tp.toolkit_environment(user_hps={}, framework_hps=framework, program="train.py",
                                 module_dir=Path("/job/source"),
                                 channels={"train": Path("/w2/train"), "test": Path("/d/test")},
                                 content_types={}, model_dir=Path("/w2/model"),
                                 output_data_dir=Path("/w2/output/data"), job_name="j",
                                 instance_type="ml.m5.xlarge", hosts=["algo-1", "algo-2"],
                                 current_host="algo-2", num_cpus=2,
                                 distributions={"train": "ShardedByS3Key"})
    assert env["SM_HOSTS"] == '["algo-1","algo-2"]' and env["SM_CURRENT_HOST"] == "algo-2"
    resources = json.loads(env["SM_RESOURCE_CONFIG"])
    assert resources["current_host"] == "algo-2" and resources["hosts"] == ["algo-1", "algo-2"]
    channels = json.loads(env["SM_INPUT_DATA_CONFIG"])
    assert channels["train"]["S3DistributionType"] == "ShardedByS3Key"
    assert channels["test"]["S3DistributionType"] == "FullyReplicated"
    # the TensorFlow container sets TF_CONFIG only for a distribution group
    assert json.loads(env["SM_DISTRIBUTION_INSTANCE_GROUPS"]) == ["homogeneousCluster"]
    training = json.loads(env["SM_TRAINING_ENV"])
    assert training["is_master"] is False and training["master_hostname"] == "algo-1"
    assert json.loads(env["SM_FRAMEWORK_PARAMS"]) == {
        "sagemaker_multi_worker_mirrored_strategy_enabled": True}


def test_any_integer_version_name_is_servable(tmp_path):
    for version in ("1", "1718000000", "notanumber"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    assert newest_model_version(tmp_path) == (1718000000, tmp_path / "1718000000")


@pytest.mark.slow
def test_the_job_process_sees_the_source_dir_and_the_framework_only(tmp_path):
    (tmp_path / "helper.py").write_text("VALUE = 7\n")
    (tmp_path / "probe.py").write_text(
        "import sys, importlib.util as u\n"
        "import helper, numpy, pyarrow\n"
        "print('helper', helper.VALUE, 'model', u.find_spec('model') is not None,\n"
        "      'harness', u.find_spec('harness') is not None,\n"
        "      'tensorflow', u.find_spec('tensorflow') is not None, flush=True)\n"
        "print('args', sys.argv[1:], flush=True)\n")
    lines = []
    env = tp.child_environment({"SM_MODEL_DIR": str(tmp_path)}, tmp_path)
    tp.run_entry_point(tp.command("probe.py", ["--epochs", "2"]), env, tmp_path, lines.append)
    assert "helper 7 model False harness False tensorflow True" in lines
    assert "args ['--epochs', '2']" in lines
    (tmp_path / "bad.py").write_text("import model.data\n")
    with pytest.raises(tp.EntryPointFailed, match="No module named 'model'"):
        tp.run_entry_point(tp.command("bad.py", []), env, tmp_path, lines.append)


def _toolkit_python() -> Path:
    """A venv holding sagemaker-training (built once, cached), whose framework is the
    project's site-packages -- without the project's editable install."""
    python = CACHE / "bin" / "python"
    probe = [str(python), "-c", "import sagemaker_training.trainer"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(CACHE)],
                   check=True, capture_output=True)
    site = next(CACHE.glob("lib/python*/site-packages"))
    (site / "project-framework.pth").write_text("\n".join(tp.framework_path()) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--no-deps", "--no-build-isolation", "--no-input", "--quiet",
                           TOOLKIT, *TOOLKIT_EXTRAS], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip(f"cannot install {TOOLKIT}: {(done.stderr or done.stdout)[-500:]}")
    return python


def _finals(lines, definitions) -> dict[str, float]:
    parser = MetricParser(definitions)
    for line in lines:
        parser.feed(line)
    return {m["MetricName"]: m["Value"] for m in parser.final()}


@pytest.mark.slow
def test_the_toolkit_runs_the_same_job_to_the_same_metrics(tmp_path):
    python = _toolkit_python()
    cfg, base, request, ctx = make_job(tmp_path / "run", "tk", {"epochs": 1, "seed": 3,
                                                                "batch_size": 64})
    write_splits(base, sizes=(400, 100, 100))
    definitions = request["AlgorithmSpecification"]["MetricDefinitions"]

    ours = LocalTrainingRunner().run(request, ctx)

    # /opt/ml as SageMaker lays it out, read by the toolkit from SAGEMAKER_BASE_DIR
    opt = tmp_path / "opt" / "ml"
    (opt / "input" / "config").mkdir(parents=True)
    (opt / "model").mkdir()
    (opt / "output" / "data").mkdir(parents=True)
    hps = dict(request["HyperParameters"])
    package = uris.local_path(json.loads(hps["sagemaker_submit_directory"]))
    hps["sagemaker_submit_directory"] = json.dumps(str(package))  # s3:// or a local path
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    (opt / "input" / "data").mkdir()
    for name in channels:
        (opt / "input" / "data" / name).symlink_to(processed(base, name))
    config = opt / "input" / "config"
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {n: {"ContentType": c["ContentType"], "TrainingInputMode": "File",
             "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
         for n, c in channels.items()}))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SM_")}
    env.update(SAGEMAKER_BASE_DIR=str(opt), SM_STUDIO_LOCAL_MODE="true",  # no DNS wait
               AWS_DEFAULT_REGION="us-east-1", PYTHONUNBUFFERED="1")
    done = subprocess.run([str(python), "-m", "sagemaker_training.cli.train"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert (opt / "output" / "success").exists()

    theirs = _finals(log.splitlines(), definitions)
    mine = {m["MetricName"]: m["Value"] for m in ours["FinalMetricDataList"]}
    assert set(mine) == set(theirs) == {d["Name"] for d in definitions}
    for name in mine:
        assert mine[name] == pytest.approx(theirs[name], abs=1e-4), name
    assert (opt / "model" / "1" / "saved_model.pb").is_file()
    with tarfile.open(uris.local_path(ours["ModelArtifacts"]["S3ModelArtifacts"])) as tar:
        assert "1/saved_model.pb" in tar.getnames()


@pytest.mark.slow
def test_a_script_that_writes_no_model_completes_with_the_toolkit_warning(tmp_path):
    """SageMaker's TensorFlow toolkit only warns (``_log_model_missing_warning``) and the
    job completes with an empty model.tar.gz: so does the local trainer."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("import sys\nprint('args', sys.argv[1:])\n")
    cfg, base, request, ctx = make_job(tmp_path / "run", "nm", {"epochs": 1}, stage=False)
    write_splits(base, sizes=(20, 10, 10))
    from harness.archives import pack_source_dir
    pack_source_dir(src, uris.local_path(json.loads(
        request["HyperParameters"]["sagemaker_submit_directory"])))
    collected = LogLines()
    ctx.log.addHandler(collected)
    records = collected.lines
    result = LocalTrainingRunner().run(request, ctx)
    assert result["TrainingJobStatus"] == "Completed"
    assert any("No model artifact is saved under path" in r for r in records)
    with tarfile.open(uris.local_path(result["ModelArtifacts"]["S3ModelArtifacts"])) as tar:
        assert tar.getnames() == []
