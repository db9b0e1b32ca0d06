"""``python -m local_runners.train_trial``: one tuning trial's training job in a process of
its own -- its log on stdout, its outcome in OUTPUT.json, SIGTERM a SageMaker stop -- and
the thread limits a trial's TensorFlow gets."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_tune import LR, Tuning

from local_runners.tuning_trial import PROJECT_ROOT, child_environment, training_request


def trial(tmp_path, **hyperparameters):
    """A trial's CreateTrainingJob request of the tiny script, written to request.json."""
    job = Tuning(tmp_path, ranges={"learning_rate": LR}, hyperparameters=hyperparameters)
    body = training_request(job.request["TrainingJobDefinition"], "tiny-tune-t1-001-0badcafe",
                            {"learning_rate": "0.01"}, "validation:accuracy", [])
    (tmp_path / "request.json").write_text(json.dumps(body))
    return job, body


def start(tmp_path):
    return subprocess.Popen([sys.executable, "-m", "local_runners.train_trial",
                             str(tmp_path / "request.json"), str(tmp_path / "output.json")],
                            env=child_environment(1), cwd=PROJECT_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def test_a_finished_trial_writes_its_describe_training_job(tmp_path):
    job, body = trial(tmp_path)
    proc = start(tmp_path)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, log
    assert "epoch=3/3 val_accuracy=" in log and "objective=validation:accuracy" in log
    out = json.loads((tmp_path / "output.json").read_text())
    assert out["TrainingJobStatus"] == "Completed"
    assert out["HyperParameters"]["learning_rate"] == "0.01"
    assert (job.training / body["TrainingJobName"] / "output" / "model.tar.gz").is_file()


def test_sigterm_stops_the_job_and_leaves_no_job_folder(tmp_path):
    job, body = trial(tmp_path, seconds_per_epoch=60)
    proc = start(tmp_path)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch=1/3"):
            break
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 143 and time.monotonic() - t0 < 10, "".join(lines) + rest
    out = json.loads((tmp_path / "output.json").read_text())
    assert out == {"TrainingJobName": body["TrainingJobName"], "TrainingJobStatus": "Stopped",
                   "FailureReason": "stopped by the tuner (SIGTERM)"}
    assert list(job.training.iterdir()) == []  # neither the job nor its temporary folder


def test_a_failing_job_is_failed_with_its_reason(tmp_path):
    trial(tmp_path, crash_above=0.001)
    proc = start(tmp_path)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1
    out = json.loads((tmp_path / "output.json").read_text())
    assert out["TrainingJobStatus"] == "Failed"
    assert "RuntimeError: diverged at learning rate 0.01" in out["FailureReason"]
    assert "RuntimeError: diverged" in log


def test_usage():
    proc = subprocess.run([sys.executable, "-m", "local_runners.train_trial"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr


BUSY_THREADS = """\
import os
import tensorflow as tf
a = tf.random.normal((800, 800))
for _ in range(60):
    b = tf.linalg.matmul(a, a)
b.numpy()
busy = 0
for tid in os.listdir("/proc/self/task"):
    stat = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    busy += int(stat[11]) + int(stat[12]) > 20  # threads with over 0.2 s of CPU
print(busy)
"""


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to tell")
def test_tensorflow_honours_the_thread_variables_a_trial_gets():
    """A trial's TensorFlow uses the threads it is given (else parallel trials would
    oversubscribe the cores): with 1 thread, only the calling thread works."""
    def busy(env):
        return int(subprocess.run([sys.executable, "-c", BUSY_THREADS], env=env, check=True,
                                  capture_output=True, text=True).stdout.split()[-1])

    unset = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")
             and not k.startswith("TF_NUM_")}
    assert busy(child_environment(1)) == 1
    assert busy(unset) >= 2
