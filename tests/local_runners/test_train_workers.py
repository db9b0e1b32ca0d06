"""A multi-instance training job run locally: one process per instance on loopback with
TF_CONFIG (MultiWorkerMirroredStrategy), the train channel ShardedByS3Key."""
import json
import logging
import re
import tarfile
import time

import psutil
import pytest
from pipeline_support import pipeline, request, run_document, stage_code, stage_context
from support import LogLines, RecordingProgress, sample_digits, write_split

from harness import uris
from harness.errors import StepFailed
from local_runners import train_workers as tw
from local_runners.train import LocalTrainingRunner

HPS = {"epochs": 4, "batch_size": 64, "learning_rate": 0.003, "seed": 7}


def write_splits(base, train_parts: int = 3) -> None:
    """2,400 train rows in ``train_parts`` files (3: shards of 1,600 and 800 rows on two
    instances -- unequal on purpose), 300 validation, 1,500 test (accuracies compared to
    0.01 need a test split where 0.01 is 15 digits)."""
    x, y = sample_digits(4200, 0)
    processed = base / "data" / "processed"
    write_split(processed / "train", x[:2400], y[:2400], parts=train_parts)
    write_split(processed / "validation", x[2400:2700], y[2400:2700])
    write_split(processed / "test", x[2700:], y[2700:])


def make_job(tmp, run_id: str, instances: int, hyperparameters=HPS):
    cfg, wf = pipeline(**{"train.hyperparameters": hyperparameters,
                          "train.instance_count": instances})
    base = uris.file_uri(tmp)
    req = request(wf, "train", run_document(base, run_id))
    stage_code(cfg, wf, base, "train")
    ctx = stage_context(cfg, "train", run_id, progress=RecordingProgress())
    return req, ctx


def run_job(tmp, run_id: str, instances: int):
    req, ctx = make_job(tmp, run_id, instances)
    lines = LogLines()
    ctx.log.addHandler(lines)
    ctx.log.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        result = LocalTrainingRunner(prewarm=False).run(req, ctx)
    finally:
        ctx.log.removeHandler(lines)
    return {"result": result, "lines": lines.lines, "ctx": ctx, "request": req,
            "seconds": time.perf_counter() - started,
            "job_dir": tmp / "training" / result["TrainingJobName"]}


def test_request_shards_the_train_channel_on_several_instances(tmp_path):
    req, _ = make_job(tmp_path, "r0", 2)
    assert req["ResourceConfig"]["InstanceCount"] == 2
    assert json.loads(req["HyperParameters"]["sagemaker_multi_worker_mirrored_strategy_enabled"])
    dist = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3DataDistributionType"]
            for c in req["InputDataConfig"]}
    assert dist == {"train": "ShardedByS3Key", "validation": "FullyReplicated",
                    "test": "FullyReplicated"}


def test_sharded_channel_gives_each_worker_every_nth_file(tmp_path):
    src = tmp_path / "train"
    src.mkdir()
    for name in ("part-2.parquet", "part-0.parquet", "part-1.parquet", "_SUCCESS",
                 ".part-0.parquet.crc"):
        (src / name).write_text(name)
    (src / "nested").mkdir()
    (src / "nested" / "part-3.parquet").write_text("n")
    got = []
    for i in range(2):
        dest = tmp_path / f"w{i}"
        tw.shard_channel(src, dest, i, 2, channel="train", job="j")
        got.append(sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")
                          if p.is_file()))
        assert all((dest / f).is_symlink() for f in got[-1])
    # by key: nested/part-3, part-0, part-1, part-2; markers left out
    assert got == [["nested/part-3.parquet", "part-1.parquet"],
                   ["part-0.parquet", "part-2.parquet"]]
    with pytest.raises(StepFailed, match="holds 4 data file.*algo-5 would get no data"):
        tw.shard_channel(src, tmp_path / "w9", 0, 5, channel="train", job="j")


def test_tf_config_is_the_tensorflow_containers(tmp_path):
    hosts = tw.hosts(3)
    assert hosts == ["algo-1", "algo-2", "algo-3"]
    config = tw.tf_config(hosts, "algo-2", [1001, 1002, 1003])
    assert config == {"cluster": {"worker": ["127.0.0.1:1001", "127.0.0.1:1002",
                                             "127.0.0.1:1003"]},
                      "environment": "cloud", "task": {"index": 1, "type": "worker"}}
    assert len(set(tw.free_ports(3))) == 3


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """The same job (data, seed) on one and on two instances."""
    out = {}
    for instances in (1, 2):
        tmp = tmp_path_factory.mktemp(f"x{instances}")
        write_splits(tmp)
        out[instances] = run_job(tmp, f"n{instances}", instances)
    return out


def _final(job) -> dict[str, float]:
    return {m["MetricName"]: m["Value"] for m in job["result"]["FinalMetricDataList"]}


@pytest.mark.slow
def test_two_instances_train_like_one(jobs):
    one, two = jobs[1], jobs[2]
    assert two["result"]["TrainingJobStatus"] == "Completed"
    assert two["result"]["ResourceConfig"]["InstanceCount"] == 2
    # the same test accuracy as one instance on all the data, same seed
    acc1, acc2 = _final(one)["test:accuracy"], _final(two)["test:accuracy"]
    print(f"test accuracy: 1 instance {acc1:.4f} ({one['seconds']:.1f} s), "
          f"2 instances {acc2:.4f} ({two['seconds']:.1f} s)")
    assert acc2 == pytest.approx(acc1, abs=0.01)
    assert acc2 > 0.8
    # progress and metrics from the chief only: one advance per epoch
    progress = two["ctx"].progress.tasks[0]
    assert progress["total"] == HPS["epochs"] and progress["advanced"] == HPS["epochs"]


@pytest.mark.slow
def test_each_instance_reads_only_its_shard_and_logs(jobs):
    lines = jobs[2]["lines"]
    # files 0 and 2 (1,600 rows) on algo-1, file 1 (800 rows) on algo-2
    chief = [ln for ln in lines if ln.startswith("data: train=")]
    other = [ln for ln in lines if ln.startswith("[algo-2] data: train=")]
    assert len(chief) == 1 and len(other) == 1
    assert re.search(r"train=1600 validation=300", chief[0])
    assert re.search(r"train=800 validation=300", other[0])
    # same number of steps on both: the total, not the own shard, sets the epoch
    steps = [ln for ln in lines if "multi-worker:" in ln]
    assert any(ln.startswith("multi-worker: 1600 rows here, 2400 on all workers, 38 steps")
               for ln in steps)
    assert any(ln.startswith("[algo-2] multi-worker: 800 rows here, 2400 on all workers, "
                             "38 steps") for ln in steps)
    assert len([ln for ln in lines if ln.startswith("[algo-2] epoch=")]) == HPS["epochs"]
    assert len([ln for ln in lines if ln.startswith("epoch=")]) == HPS["epochs"]


@pytest.mark.slow
def test_only_the_chiefs_model_is_packed(jobs, tmp_path):
    job_dir = jobs[2]["job_dir"]
    with tarfile.open(job_dir / "output" / "model.tar.gz") as tar:
        names = tar.getnames()
    assert "1/saved_model.pb" in names
    assert all(not n.startswith(("algo-", "workers")) for n in names)
    assert any(n.startswith("1/assets.extra/drift_baseline/") for n in names)
    assert not (job_dir / "workers").exists()  # the other workers' dirs are gone
    with tarfile.open(job_dir / "output" / "output.tar.gz") as tar:
        assert tar.getnames() == ["metrics.json"]
    lines = jobs[2]["lines"]
    assert any(ln.startswith("exported SavedModel to ") and str(job_dir.name) in ln
               for ln in lines)
    assert any(ln.startswith("[algo-2] exported SavedModel to ") and "worker-export-" in ln
               for ln in lines)


@pytest.mark.slow
def test_a_failing_instance_fails_the_job_and_stops_the_others(tmp_path):
    write_splits(tmp_path, train_parts=2)
    # algo-2's shard (the second file) has a label the network cannot have
    import pyarrow as pa
    import pyarrow.parquet as pq
    bad = sorted((tmp_path / "data" / "processed" / "train").glob("part-*"))[1]
    table = pq.read_table(bad)
    pq.write_table(table.set_column(1, "label", pa.array([12] * table.num_rows, pa.int32())),
                   bad)
    req, ctx = make_job(tmp_path, "f1", 2)
    me = psutil.Process()
    # processes this worker already had (a Spark JVM an earlier test module keeps) stay
    before = {p.pid for p in me.children(recursive=True)}
    started = time.perf_counter()
    with pytest.raises(StepFailed, match=r"failed: algo-2: ERROR: .*label.*outside \[0, 9\]"):
        LocalTrainingRunner(prewarm=False).run(req, ctx)
    assert time.perf_counter() - started < 60  # the chief did not wait out a timeout
    assert [p for p in me.children(recursive=True) if p.pid not in before and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE] == []
    training = tmp_path / "training"
    assert not training.exists() or list(training.iterdir()) == []
