"""One trial of a local tuning job, in a process of its own::

    python -m local_runners.train_trial REQUEST.json OUTPUT.json

Runs the ``CreateTrainingJob`` request in ``REQUEST.json`` with ``LocalTrainingRunner``
(the local trainer runs one script at a time per process, so parallel trials need
processes). Every log line of the job -- the runner's and the script's -- goes to stdout
as it comes: the tuner reads them as SageMaker reads a training job's log. ``OUTPUT.json``
gets the ``DescribeTrainingJob`` result, or ``{"TrainingJobName", "TrainingJobStatus":
"Failed" | "Stopped", "FailureReason"}``.

SIGTERM stops the job as SageMaker's StopTrainingJob does: the script is interrupted, the
job folder is discarded (it appears only for a finished job) and the status is Stopped.
The process leads its own process group and ends it when its parent (the tuner) is gone.
Exit code: 0 completed, 1 failed, 2 unusable arguments, 143 stopped.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 1, 2, 143


class TrainingStopped(BaseException):
    """Raised in the script by SIGTERM (not an Exception: the script cannot swallow it)."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough
    raise TrainingStopped()


def _watch_parent(parent: int) -> None:
    """End this process group when the tuner that started it is gone."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            if os.getpgid(0) == os.getpid():  # started by the tuner: its own group
                os.killpg(os.getpid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


def _logger() -> logging.Logger:
    log = logging.getLogger("local_runners.train_trial")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)  # the real stdout, not the script's
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    return log


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m local_runners.train_trial REQUEST.json OUTPUT.json",
              file=sys.stderr)
        return EXIT_USAGE
    request_file, output_file = Path(argv[0]), Path(argv[1])
    signal.signal(signal.SIGTERM, _on_sigterm)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    log = _logger()
    name = "?"
    try:
        request = json.loads(request_file.read_text())
        name = request.get("TrainingJobName", "?")
        from harness.config import PipelineConfig
        from harness.errors import HarnessError
        from harness.stages import StageContext
        from local_runners.train import LocalTrainingRunner

        ctx = StageContext(run_id=name, step=name, config=PipelineConfig(), log=log,
                           announce=log.info)
        try:
            result = LocalTrainingRunner(prewarm=False).run(request, ctx)  # serves nothing after
        except HarnessError as e:
            log.error("%s", e.message)
            _write(output_file, {"TrainingJobName": name, "TrainingJobStatus": "Failed",
                                 "FailureReason": e.message})
            return EXIT_FAILED
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # done: a late stop changes nothing
        _write(output_file, result)
        return 0
    except TrainingStopped:
        log.info("training job %s stopped (SIGTERM)", name)
        _write(output_file, {"TrainingJobName": name, "TrainingJobStatus": "Stopped",
                             "FailureReason": "stopped by the tuner (SIGTERM)"})
        return EXIT_STOPPED
    except Exception as e:  # the harness's own failure (unreadable request, ...)
        log.error("%s", traceback.format_exc().rstrip())
        _write(output_file, {"TrainingJobName": name, "TrainingJobStatus": "Failed",
                             "FailureReason": f"{type(e).__name__}: {e}"})
        return EXIT_FAILED


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: TensorFlow's threads may hold it up
