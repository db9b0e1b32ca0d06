"""`harness cloud plan|preflight|bootstrap|run|teardown` (``cloud_cli``) as a user sees
them: without AWS (exit 2, nothing created), on moto, and `plan --json` through the real
entry point."""
import json
import os
import subprocess
import sys
from argparse import Namespace

import pytest
from cloud_support import answer, console, printed, workflow
from support import moto_session

from cloud_runners import cloud_cli
from cloud_runners.stack import stack_outputs
from harness.cli import main
from harness.config import PROJECT_ROOT

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzzSECRETzz"
MACHINE_STATES = ["etl", "train", "evaluate", "gate", "gate-check", "gate-missing",
                  "gate-failed", "model", "endpoint-config", "endpoint", "endpoint-wait",
                  "endpoint-describe", "endpoint-in-service", "endpoint-failed",
                  "PipelineSucceeded", "PipelineFailed"]
NO_CREDENTIALS = ("no AWS credentials found: set AWS_PROFILE or "
                  "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")


def test_plan_json_shows_the_generated_asl_and_every_request(no_aws, cfg, wf):
    c = console()
    assert cloud_cli.plan(cfg, wf, c, Namespace(json=True)) == 0
    p = json.loads(c.file.getvalue())
    assert list(p["state_machine"]["definition"]["States"]) == MACHINE_STATES
    assert set(p["requests"]) == {s.state_id for s in wf.steps}
    assert p["requests"]["model"]["PrimaryContainer"]["ModelDataUrl"] == \
        "{$.Train.ModelArtifacts.S3ModelArtifacts}"
    assert p["requests"]["infer"]["EndpointName"] == "{$.Endpoint.EndpointName}"
    assert p["cost"]["run_total"] > 0
    assert no_aws == []


def test_plan_and_run_dry_run_print_the_plan(no_aws, cfg, wf):
    for command, args in ((cloud_cli.plan, Namespace(json=False)),
                          (cloud_cli.run, Namespace(dry_run=True))):
        c = console()
        assert command(cfg, wf, c, args) == 0
        out = c.file.getvalue()
        assert '"StartAt": "etl"' in out
        assert "arn:aws:states:::sagemaker:createTrainingJob.sync" in out
        assert "tensorflow-training:2.19" in out and "one run" in out
        assert "per hour until `harness cloud teardown`" in out
    assert no_aws == []


def test_plan_with_an_unpriced_instance_type_exit_2(no_aws, cfg):
    cfg.train.instance_type = "ml.p99.huge"
    c = console()
    assert cloud_cli.plan(cfg, workflow(cfg), c, Namespace(json=False)) == 2
    out = printed(c)
    assert out.startswith("plan failed:") and "train.instance_type" in out
    assert "ml.p99.huge" in out


@pytest.mark.parametrize("command", ["preflight", "bootstrap", "teardown"])
def test_without_credentials_prints_why_and_returns_2(no_aws, cfg, wf, command):
    c = console()
    assert getattr(cloud_cli, command)(cfg, wf, c, Namespace()) == 2
    out = printed(c)
    assert out.startswith(f"{command}: ") and NO_CREDENTIALS in out
    assert "nothing was created" in out
    assert no_aws == []


@pytest.mark.parametrize("argv", [["cloud", "run"], ["run", "--backend", "cloud"]])
def test_a_run_without_credentials_exit_2_and_nothing_created(no_aws, tmp_path, capsys, argv):
    runs = tmp_path / "runs"
    assert main([*argv, "--runs-dir", str(runs)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert NO_CREDENTIALS in out and "nothing was created" in out
    assert not runs.exists()
    assert no_aws == []


def test_local_only_options_are_refused_on_the_cloud_backends(no_aws, tmp_path, capsys):
    for backend in ("emulator", "cloud"):
        assert main(["run", "--backend", backend, "--resume", "x",
                     "--runs-dir", str(tmp_path / "runs")]) == 2
        assert "apply to the local backend only" in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "runs").exists()


def test_plan_json_through_the_entry_point(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    empty = tmp_path / "empty"
    empty.write_text("")
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(empty), AWS_CONFIG_FILE=str(empty),
               AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL="http://127.0.0.1:9",
               MLHARNESS_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "cloud", "plan", "--json",
                           "--set", "cloud.poll_seconds=60"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    p = json.loads(proc.stdout)
    asl = p["state_machine"]["definition"]
    assert list(asl["States"]) == MACHINE_STATES
    assert asl["States"]["endpoint-wait"]["Seconds"] == 60
    assert p["requests"]["etl"]["Arguments"]["--num_classes"] == "{$.Prepare.NumClasses}"
    assert p["requests"]["gate"]["Metric"] == "metrics.accuracy"


# --- on moto ---------------------------------------------------------------------------

def test_bootstrap_creates_the_stack_the_glue_job_and_the_state_machine(aws, cfg, wf,
                                                                      monkeypatch):
    monkeypatch.setattr("cloud_runners.aws.session_for", lambda cfg: aws)  # for the hook
    c = console()
    assert cloud_cli.bootstrap(cfg, wf, c, Namespace()) == 0
    out = stack_outputs(cfg, aws)
    text = printed(c)
    assert "creating stack mlharness" in text and out["BucketName"] in text
    assert "Glue job mnist-etl created" in text and "state machine arn:" in text
    assert "tagged mlharness:project=mlharness" in text
    job = aws.client("glue").get_job(JobName=cfg.etl.job_name)["Job"]
    script = job["Command"]["ScriptLocation"]
    assert script == f"s3://{out['BucketName']}/mlharness/runs/bootstrap/code/etl/mnist_etl.py"
    bucket, key = script[len("s3://"):].split("/", 1)
    aws.client("s3").head_object(Bucket=bucket, Key=key)
    machines = aws.client("stepfunctions").list_state_machines()["stateMachines"]
    assert [m["name"] for m in machines] == ["mlharness-mnist"]
    # Again: the stack is up to date, the job updated, still one state machine.
    answer(aws, "glue.UpdateJob", {"JobName": "mnist-etl"})  # moto 5.2.5 has no UpdateJob
    c = console()
    assert cloud_cli.bootstrap(cfg, wf, c, Namespace()) == 0
    assert "stack mlharness is up to date" in printed(c)
    assert "Glue job mnist-etl updated" in printed(c)
    assert len(aws.client("stepfunctions").list_state_machines()["stateMachines"]) == 1


def test_preflight_after_bootstrap_never_prints_the_secret(monkeypatch, cfg, wf):
    with moto_session(monkeypatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        assert cloud_cli.bootstrap(cfg, wf, console(), Namespace()) == 0
        c = console()
        assert cloud_cli.preflight(cfg, wf, c, Namespace()) == 0
    out = printed(c)
    assert "preflight ok" in out and "will create" in out and "one run" in out
    assert "processing job" in out and "mnist-evaluate-" in out
    assert SECRET not in out and SECRET[:12] not in out


def test_preflight_before_bootstrap_says_so(aws, cfg, wf):
    c = console()
    assert cloud_cli.preflight(cfg, wf, c, Namespace()) == 1
    assert "preflight failed:" in printed(c) and "harness cloud bootstrap" in printed(c)


def test_teardown_lists_what_it_deleted(aws, cfg, wf):
    c = console()
    assert cloud_cli.teardown(cfg, wf, c, Namespace()) == 0
    assert "nothing to delete: the project has nothing in us-east-1" in printed(c)
    assert cloud_cli.bootstrap(cfg, wf, console(), Namespace()) == 0
    c = console()
    assert cloud_cli.teardown(cfg, wf, c, Namespace()) == 0
    text = printed(c)
    assert "deleted Glue job mnist-etl" in text and "deleted state machine mlharness-mnist" in text
    assert "teardown done: 4 item(s) deleted" in text
    assert aws.client("stepfunctions").list_state_machines()["stateMachines"] == []
