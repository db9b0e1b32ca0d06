"""A multi-instance training job on this machine: one process per instance, on loopback.

SageMaker starts ``InstanceCount`` instances named ``algo-1`` .. ``algo-N``; on each the
TensorFlow container runs the entry point with the same ``SM_*`` environment except the
current host, and -- when the job sets ``sagemaker_multi_worker_mirrored_strategy_enabled``
-- ``TF_CONFIG`` naming every host as a worker (``_build_tf_config_for_mwms`` in
aws/sagemaker-tensorflow-training-toolkit: ``{"cluster": {"worker": ["algo-1:8890", ...]},
"environment": "cloud", "task": {"index": i, "type": "worker"}}``). Here the hosts are
processes and their addresses ``127.0.0.1:<free port>``.

Channels: a ``ShardedByS3Key`` channel gives instance i the objects i, i+N, ... (by key);
here the channel's data files, sorted by path, hidden ones (``_SUCCESS``, ``.crc``, any
name starting with ``.`` or ``_``) left out, linked into a folder of the worker's own. A
``FullyReplicated`` channel is the same folder for everyone.

The job fails when any worker fails: the others are stopped (a peer left alone waits in a
collective forever) and the failing worker's exit code and last error line are reported.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from harness.errors import StepFailed
from local_runners import train_process as tp

SHARDED = "ShardedByS3Key"
REPLICATED = "FullyReplicated"
DISTRIBUTIONS = (REPLICATED, SHARDED)
MWMS_FLAG = "sagemaker_multi_worker_mirrored_strategy_enabled"


@dataclass
class Worker:
    host: str
    env: dict[str, str]
    model_dir: Path


def hosts(count: int) -> list[str]:
    return [f"algo-{i}" for i in range(1, count + 1)]


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(all_hosts: list[str], current_host: str, ports: list[int]) -> dict:
    """``_build_tf_config_for_mwms`` with loopback addresses instead of ``algo-i:8890``."""
    return {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "environment": "cloud",
            "task": {"index": all_hosts.index(current_host), "type": "worker"}}


def data_files(directory: Path) -> list[Path]:
    """A channel's objects as ShardedByS3Key distributes them: sorted by key (path),
    without Spark/Hadoop markers and temporaries."""
    def hidden(p: Path) -> bool:
        return any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)

    return sorted((p for p in directory.rglob("*") if p.is_file() and not hidden(p)),
                  key=lambda p: p.relative_to(directory).as_posix())


def shard_channel(source: Path, dest: Path, index: int, count: int, *, channel: str,
                  job: str) -> list[Path]:
    """Link files ``index``, ``index + count``, ... of ``source`` into ``dest`` (keeping
    their relative paths) and return them."""
    files = data_files(source) if source.is_dir() else [source]
    if len(files) < count:
        raise StepFailed("train", f"training job {job} failed: channel '{channel}' is "
                         f"{SHARDED} over {count} instances but holds {len(files)} data "
                         f"file(s): algo-{len(files) + 1} would get no data",
                         file=str(source), field="InputDataConfig.S3DataDistributionType",
                         expected=f"at least {count} files (write more part files) or "
                         f"{REPLICATED}")
    mine = files[index::count]
    for f in mine:
        link = dest / (f.relative_to(source) if source.is_dir() else f.name)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f.resolve())
    return mine


def distributions(request: Mapping) -> dict[str, str]:
    """Each channel's S3DataDistributionType, checked."""
    out: dict[str, str] = {}
    for i, ch in enumerate(request.get("InputDataConfig", [])):
        value = (((ch.get("DataSource") or {}).get("S3DataSource") or {})
                 .get("S3DataDistributionType") or REPLICATED)
        if value not in DISTRIBUTIONS:
            raise StepFailed("train", f"channel '{ch.get('ChannelName')}': unknown data "
                             "distribution", got=value, expected=" or ".join(DISTRIBUTIONS),
                             field=f"InputDataConfig[{i}].DataSource.S3DataSource."
                             "S3DataDistributionType")
        out[ch.get("ChannelName")] = value
    return out


def prepare_workers(*, count: int, scratch: Path, channels: Mapping[str, Path],
                    dists: Mapping[str, str], model_dir: Path, output_data_dir: Path,
                    source: Path, job: str, mwms: bool,
                    environment: Callable[..., dict[str, str]],
                    layers: Sequence[Path] = ()) -> list[Worker]:
    """Per worker: its channel folders, model and output dirs (the chief's are the job's,
    the others' are scratch), and its environment. ``environment(hosts=, current_host=,
    channels=, model_dir=, output_data_dir=)`` returns the toolkit's ``SM_*`` variables."""
    names = hosts(count)
    ports = free_ports(count)
    workers = []
    for i, host in enumerate(names):
        home = scratch / host
        own: dict[str, Path] = {}
        for name, path in channels.items():
            if dists.get(name) == SHARDED:
                own[name] = home / "input" / "data" / name
                own[name].mkdir(parents=True)
                shard_channel(path, own[name], i, count, channel=name, job=job)
            else:
                own[name] = path
        mdir, odir = (model_dir, output_data_dir) if i == 0 else (home / "model",
                                                                  home / "output" / "data")
        mdir.mkdir(parents=True, exist_ok=True)
        odir.mkdir(parents=True, exist_ok=True)
        env = tp.child_environment(environment(hosts=names, current_host=host, channels=own,
                                               model_dir=mdir, output_data_dir=odir), source,
                                     layers)
        if mwms:  # what the TensorFlow container adds when the job enables MWMS
            env["TF_CONFIG"] = json.dumps(tf_config(names, host, ports))
        workers.append(Worker(host, env, mdir))
    return workers


def run_workers(workers: list[Worker], cmd: list[str], cwd: Path,
                on_line: Callable[[str, str], None], poll_s: float = 0.2) -> None:
    """Run every worker's process; each output line goes to ``on_line(host, line)`` (one at
    a time). All exit 0: returns. One exits non-zero: the others are stopped and
    ``EntryPointFailed`` names that worker. An exception here stops all of them."""
    lock = threading.Lock()
    procs: list[tuple[Worker, subprocess.Popen, list[str]]] = []
    readers: list[threading.Thread] = []
    try:
        for w in workers:
            emit = (lambda host: lambda line: on_line(host, line))(w.host)
            proc, tail, threads = tp.start_entry_point(cmd, w.env, cwd, emit, lock)
            procs.append((w, proc, tail))
            readers.extend(threads)
        failed = None
        while failed is None:
            codes = [p.poll() for _, p, _ in procs]
            failed = next((entry for entry, code in zip(procs, codes) if code not in (None, 0)),
                          None)
            if all(code == 0 for code in codes):
                break
            time.sleep(poll_s)  # short slices: see run_entry_point (exceptions from threads)
    finally:
        for _, p, _ in procs:  # the rest of a failed job, or all of an interrupted one
            tp.stop(p)
        for t in readers:
            t.join(timeout=10)
    if failed is not None:
        w, p, tail = failed
        raise tp.EntryPointFailed(p.returncode,
                                  f"{w.host}: {tp.failure_detail(p.returncode, tail)}", cmd)


def remove_scratch(scratch: Path) -> None:
    """The other workers' model dirs and channel links: SageMaker uploads the chief's only."""
    shutil.rmtree(scratch, ignore_errors=True)
