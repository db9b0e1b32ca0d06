"""The training container's side of a job, as the SageMaker training toolkit does it.

``sagemaker-training`` (the entry point of SageMaker's framework training images) reads
the JSON-encoded hyperparameters, decodes each value (``json.loads``, else the raw
string), passes the user's ones to the entry point as ``--name value`` arguments, sets the
``SM_*`` environment and runs ``python train.py ...`` in a new process, from the unpacked
source dir. This module does the same for the local trainer:

- ``decode_hyperparameters`` / ``cmd_args`` / ``toolkit_environment``: the toolkit's
  decoding, arguments and ``SM_*`` variables;
- ``run_entry_point``: a fresh ``python -S`` whose ``sys.path`` is the source dir and the
  framework (this interpreter's site-packages, without processing their ``.pth`` files:
  the project's editable install stays out, so a module missing from
  ``sourcedir.tar.gz`` fails here as it fails on SageMaker); its stdout/stderr lines go to
  a callback as they come; an interrupt (Ctrl-C, SIGTERM raised in this process) stops it.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

HOST = "algo-1"
GROUP = "homogeneousCluster"
PREFIX = "sagemaker_"
STOP_GRACE_S = 5.0
# sagemaker_* flags that make the toolkit's instance group a distribution group
DISTRIBUTION_FLAGS = ("sagemaker_mpi_enabled", "sagemaker_parameter_server_enabled",
                      "sagemaker_distributed_dataparallel_enabled",
                      "sagemaker_multi_worker_mirrored_strategy_enabled")
# Variables of this process the job must not inherit (its sys.path is the toolkit's).
DROPPED_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH")


class EntryPointFailed(Exception):
    """The entry point exited non-zero: ``detail`` is its last stderr line (SageMaker's
    ``ErrorMessage``), ``exit_code`` the exit status (negative: killed by that signal)."""

    def __init__(self, exit_code: int, detail: str, command: list[str]):
        self.exit_code = exit_code
        self.detail = detail
        self.command = command
        super().__init__(detail)


def decode_value(text: Any) -> Any:
    """The toolkit's ``read_hyperparameters``: ``json.loads``, else the value itself."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def decode_hyperparameters(hps: Mapping[str, Any]) -> dict[str, Any]:
    return {k: decode_value(v) for k, v in hps.items()}


def split_hyperparameters(decoded: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user hyperparameters, ``sagemaker_*`` ones) as the toolkit splits them."""
    user = {k: v for k, v in decoded.items() if not k.startswith(PREFIX)}
    framework = {k: v for k, v in decoded.items() if k.startswith(PREFIX)}
    return user, framework


def _arg_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)  # True -> "True", 2 -> "2", as the toolkit's mapping._decode


def cmd_args(user_hps: Mapping[str, Any]) -> list[str]:
    """The toolkit's ``to_cmd_args``: ``--name value`` (``-n`` for a one-letter name),
    names sorted."""
    out: list[str] = []
    for key in sorted(user_hps):
        out += [f"--{key}" if len(key) > 1 else f"-{key}", _arg_value(user_hps[key])]
    return out


def _env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def toolkit_environment(*, user_hps: Mapping[str, Any], framework_hps: Mapping[str, Any],
                        program: str, module_dir: Path, channels: Mapping[str, Path],
                        content_types: Mapping[str, str], model_dir: Path,
                        output_data_dir: Path, job_name: str, instance_type: str,
                        hosts: Iterable[str] = (HOST,), current_host: str = HOST,
                        num_cpus: int | None = None,
                        distributions: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``SM_*`` variables of the toolkit's ``Environment.to_env_vars``
    (``distributions``: each channel's S3DataDistributionType, FullyReplicated if absent)."""
    hosts = list(hosts)
    output_dir = output_data_dir.parent
    distributions = distributions or {}
    input_data_config = {name: {"ContentType": content_types.get(name, ""),
                                "TrainingInputMode": "File",
                                "S3DistributionType": distributions.get(name)
                                or "FullyReplicated",
                                "RecordWrapperType": "None"} for name in sorted(channels)}
    resource_config = {"current_host": current_host, "hosts": hosts,
                       "current_instance_type": instance_type, "current_group_name": GROUP,
                       "instance_groups": [{"instance_group_name": GROUP,
                                            "instance_type": instance_type,
                                            "hosts": hosts}],
                       "network_interface_name": "eth0"}
    additional = {k: v for k, v in framework_hps.items()
                  if k not in ("sagemaker_program", "sagemaker_submit_directory",
                               "sagemaker_region", "sagemaker_job_name",
                               "sagemaker_container_log_level",
                               "sagemaker_enable_cloudwatch_metrics")}
    # the toolkit's get_distribution_instance_groups_from_resource_config: the group takes
    # part in distributed training when the job enables a distribution (the TensorFlow
    # container sets TF_CONFIG only then)
    distributed = any(framework_hps.get(k) for k in DISTRIBUTION_FLAGS)
    cpus = num_cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                        else os.cpu_count() or 1)
    args = cmd_args(user_hps)
    env: dict[str, Any] = {
        "hosts": hosts, "network_interface_name": "eth0", "hps": dict(user_hps),
        "user_entry_point": program, "framework_params": additional,
        "resource_config": resource_config, "input_data_config": input_data_config,
        "output_data_dir": str(output_data_dir), "channels": sorted(channels),
        "current_host": current_host, "current_instance_type": instance_type,
        "current_instance_group": GROUP, "current_instance_group_hosts": hosts,
        "instance_groups": [GROUP],
        "distribution_instance_groups": [GROUP] if distributed else [],
        "is_hetero": False, "module_name": program[:-3] if program.endswith(".py") else program,
        "log_level": 20, "framework_module": None, "output_dir": str(output_dir),
        "num_cpus": cpus, "num_gpus": 0, "num_neurons": 0, "model_dir": str(model_dir),
        "module_dir": str(module_dir), "user_args": args,
        "output_intermediate_dir": str(output_dir / "intermediate"),
    }
    env["training_env"] = {
        "additional_framework_parameters": additional,
        "channel_input_dirs": {k: str(v) for k, v in channels.items()},
        "current_host": current_host, "current_instance_type": instance_type,
        "framework_module": None, "hosts": hosts, "hyperparameters": dict(user_hps),
        "input_data_config": input_data_config, "is_master": current_host == hosts[0],
        "job_name": job_name, "log_level": 20, "master_hostname": hosts[0],
        "model_dir": str(model_dir), "module_dir": str(module_dir),
        "module_name": env["module_name"], "network_interface_name": "eth0",
        "num_cpus": cpus, "num_gpus": 0, "output_data_dir": str(output_data_dir),
        "output_dir": str(output_dir), "resource_config": resource_config,
        "user_entry_point": program,
    }
    for name, path in channels.items():
        env[f"channel_{name}"] = str(path)
    for key, value in user_hps.items():
        env[f"hp_{key}"] = value
    return {f"SM_{k.upper()}": _env_value(v) for k, v in env.items()}


def framework_path() -> list[str]:
    """The site-packages directories of this interpreter (TensorFlow, numpy, pyarrow...):
    the framework of the container. Not the project root, not ``''``/cwd, and -- as they
    are put on PYTHONPATH of a ``-S`` interpreter -- no ``.pth`` file of theirs runs (the
    editable install's finder is one)."""
    seen: list[str] = []
    for p in sys.path:
        if Path(p).name in ("site-packages", "dist-packages") and p not in seen:
            seen.append(p)
    return seen


def child_environment(sm_env: Mapping[str, str], source: Path,
                      layers: Iterable[Path] = ()) -> dict[str, str]:
    """The job's environment; ``layers`` (the source dir's installed requirements,
    ``local_runners.source_requirements``) come before the framework, as packages pip
    installs into the container's environment replace the framework's."""
    env = {k: v for k, v in os.environ.items()
           if k not in DROPPED_VARIABLES and not k.startswith("SM_")}
    env.update(sm_env)
    env["PYTHONPATH"] = os.pathsep.join([str(source), *map(str, layers)] + framework_path())
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"   # as the TensorFlow images set it
    return env


def command(program: str, args: list[str]) -> list[str]:
    """``python -S -- train.py --epochs 2 ...`` (the toolkit runs ``python -- train.py``;
    ``-S``: no site processing, see ``framework_path``)."""
    return [sys.executable, "-S", "--", program, *args]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _pump(stream, on_line: Callable[[str], None], lock: threading.Lock,
          tail: list[str] | None) -> None:
    for raw in iter(stream.readline, ""):
        line = raw.rstrip("\r\n")
        if tail is not None and line.strip():
            tail[:] = (tail + [line])[-5:]
        with lock:
            on_line(line)
    stream.close()


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL after ``grace_s`` (SageMaker's StopTrainingJob)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_entry_point(cmd: list[str], env: Mapping[str, str], cwd: Path,
                      on_line: Callable[[str], None], lock: threading.Lock
                      ) -> tuple[subprocess.Popen, list[str], list[threading.Thread]]:
    """Start the job's process with its output pumped line by line to ``on_line`` (under
    ``lock``): the process, the tail of its stderr (kept for the failure reason) and the
    reader threads."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace", bufsize=1,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    tail: list[str] = []
    readers = [threading.Thread(target=_pump, args=(proc.stdout, on_line, lock, None),
                                daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr, on_line, lock, tail),
                                daemon=True)]
    for t in readers:
        t.start()
    return proc, tail, readers


def failure_detail(code: int, tail: list[str]) -> str:
    """What a failed job's reason names: its last error line, else how it ended."""
    return tail[-1] if tail else (f"killed by signal {-code}" if code < 0
                                  else f"exit code {code}")


def run_entry_point(cmd: list[str], env: Mapping[str, str], cwd: Path,
                    on_line: Callable[[str], None]) -> None:
    """Run the job's process; every stdout/stderr line goes to ``on_line`` (one at a time).
    Exit 0 returns; otherwise EntryPointFailed. An exception raised here while it runs
    (KeyboardInterrupt, a SIGTERM handler's) stops the process first."""
    proc, tail, readers = start_entry_point(cmd, env, cwd, on_line, threading.Lock())
    try:
        # waited for in short slices: an exception raised in this thread from another one
        # (the emulator stopping its jobs: PyThreadState_SetAsyncExc) is only delivered
        # while Python code runs, never inside a blocking waitpid()
        while True:
            try:
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
    except BaseException:
        stop(proc)
        raise
    finally:
        for t in readers:
            t.join(timeout=10)
    if code != 0:
        raise EntryPointFailed(code, failure_detail(code, tail), cmd)
