"""Drift monitoring of a run's endpoint: find what to check, then run the same check the
SageMaker Processing job runs (``model/drift_check.py``).

A run's endpoint is found from the run's own records, by the shape of the requests its
steps sent (no step is known by name): the ``CreateEndpointConfig`` request gives the
capture destination (``DataCaptureConfig.DestinationS3Uri``) and the model
(``ProductionVariants[0].ModelName``); the ``CreateModel`` request of that model gives
``ModelDataUrl``, the ``model.tar.gz`` whose ``<version>/assets.extra/drift_baseline/``
holds the baseline the training script wrote (Model Monitor's ``statistics.json`` and
``constraints.json``). ``harness monitor`` takes a run id or an endpoint name.

Each check writes ``runs/<run>/monitoring/<UTC time>/``: ``baseline/`` (the statistics
and the constraints the check used: the run's, with the ``monitor:`` settings of the
config written into ``monitoring_config``), ``constraint_violations.json``,
``drift_report.json``, ``summary.txt`` and ``drift.png``. The folder is written under a
temporary name and renamed when complete.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import uris
from harness.archives import extract_archive, newest_model_version
from harness.errors import DataError, HarnessError
from harness.report import write_report_safely
from harness.runs import RunStore
from model.drift_baseline import BASELINE_DIR, CONSTRAINTS, STATISTICS


@dataclass
class MonitorTarget:
    run_id: str
    run_dir: Path
    endpoint_name: str | None
    capture_uri: str | None       # DataCaptureConfig.DestinationS3Uri
    model_data: str               # the served model.tar.gz


def _step_docs(run_dir: Path, name: str) -> list[dict[str, Any]]:
    """Every step's ``input.json`` or ``output.json`` of a run that reads as an object."""
    out = []
    for path in sorted((run_dir / "steps").glob(f"*/{name}")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def _requests(run_dir: Path) -> list[dict[str, Any]]:
    return _step_docs(run_dir, "input.json")


def _outputs(run_dir: Path) -> list[dict[str, Any]]:
    return _step_docs(run_dir, "output.json")


def target_of_run(store: RunStore, run_id: str) -> MonitorTarget:
    """The endpoint a run deployed: its capture destination and its model."""
    run_dir = store.run_dir(run_id)
    if not run_dir.is_dir():
        raise HarnessError(f"no run {run_id!r} in {store.root}",
                           expected="a run id (`harness runs` lists them) or an endpoint name")
    requests = _requests(run_dir)
    config = next((r for r in requests if "EndpointConfigName" in r
                   and isinstance(r.get("ProductionVariants"), list)), None)
    if config is None or not config["ProductionVariants"]:
        raise HarnessError(f"run {run_id} created no endpoint config, so there is no endpoint "
                           "traffic to check", expected="a run that deployed an endpoint")
    model_name = config["ProductionVariants"][0].get("ModelName")
    model = next((r for r in requests if r.get("ModelName") == model_name), None)
    model_data = ((model or {}).get("PrimaryContainer") or {}).get("ModelDataUrl")
    if not isinstance(model_data, str):
        raise HarnessError(f"run {run_id}: the model {model_name} has no ModelDataUrl in its "
                           "CreateModel request", expected="a run that created its model")
    capture = (config.get("DataCaptureConfig") or {}).get("DestinationS3Uri")
    # the CreateEndpoint request names both (a cloud run's endpoint output keeps only
    # EndpointName and EndpointStatus)
    endpoint = next((d.get("EndpointName") for d in (*requests, *_outputs(run_dir))
                     if d.get("EndpointConfigName") == config["EndpointConfigName"]
                     and isinstance(d.get("EndpointName"), str)), None)
    return MonitorTarget(run_id, run_dir, endpoint, capture, model_data)


def find_target(store: RunStore, ref: str) -> MonitorTarget:
    """``ref`` is a run id, or the name of an endpoint a run created (newest run first)."""
    if store.has_run(ref):
        return target_of_run(store, ref)
    for run_id in reversed(store.list_ids()):
        if any(o.get("EndpointName") == ref for o in _outputs(store.run_dir(run_id))):
            return target_of_run(store, run_id)
    raise HarnessError(f"no run and no endpoint named {ref!r} in {store.root}",
                       expected="a run id (`harness runs` lists them) or an endpoint name")


def baseline_files(target: MonitorTarget, into: Path) -> tuple[Path, Path]:
    """The baseline inside the run's model archive, unpacked into ``into``."""
    archive = uris.local_path(target.model_data)
    extract_archive(archive, into / "model", what="model archive",
                    expected="the model.tar.gz of the run's training job")
    _, version_dir = newest_model_version(into / "model")
    folder = version_dir / BASELINE_DIR
    stats, cons = folder / STATISTICS, folder / CONSTRAINTS
    if not stats.is_file() or not cons.is_file():
        raise DataError("the model has no drift baseline", file=str(archive),
                        expected=f"<version>/{BASELINE_DIR}/{STATISTICS} and {CONSTRAINTS} "
                        "(model/train.py writes them from the validation split; a model "
                        "trained before it did has none: run the pipeline again)")
    return stats, cons


def apply_settings(constraints: Path, dest: Path, settings: dict[str, Any]) -> Path:
    """``constraints.json`` with the ``monitor:`` settings written into its
    ``monitoring_config`` (what this check used, kept beside its results)."""
    doc = json.loads(constraints.read_text(encoding="utf-8"))
    mc = doc.setdefault("monitoring_config", {})
    dc = mc.setdefault("distribution_constraints", {})
    dc.update({"comparison_method": settings["comparison_method"],
               "comparison_threshold": settings["comparison_threshold"],
               "significance_level": settings["significance_level"]})
    mc["datatype_check_threshold"] = settings["datatype_check_threshold"]
    for feature in doc.get("features") or []:
        if isinstance(feature, dict):
            feature["completeness"] = settings["min_completeness"]
    dest.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return dest


def check(target: MonitorTarget, settings: dict[str, Any], *, start: str | None = None,
          end: str | None = None, log: Callable[[str], None] = print
          ) -> tuple[dict[str, Any], Path]:
    """Check the target's captured traffic in [start, end); returns the drift report and
    the folder of the results."""
    from model.drift_check import run_check

    if not target.capture_uri:
        raise HarnessError(f"run {target.run_id}'s endpoint captures no traffic "
                           "(DataCaptureConfig is off)",
                           field="deploy.data_capture_percent",
                           expected="a percentage above 0 for the run being monitored")
    for what, uri in (("captured its traffic to", target.capture_uri),
                      ("keeps its model in", target.model_data)):
        if not uri.startswith("file://"):
            raise HarnessError(f"run {target.run_id}'s endpoint {what} {uri}: `harness "
                               "monitor` checks what a local run captured",
                               expected="a local run; for a cloud run, `harness cloud "
                               f"monitor {target.run_id}` runs the same check as a "
                               "SageMaker Processing job")
    capture = uris.local_path(target.capture_uri)
    parent = target.run_dir / "monitoring"
    parent.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    work = Path(tempfile.mkdtemp(prefix=f".{stamp}.tmp-", dir=parent))
    try:
        stats, cons = baseline_files(target, work / "unpacked")
        (work / "baseline").mkdir()
        used_stats = Path(shutil.copy2(stats, work / "baseline" / STATISTICS))
        used_cons = apply_settings(cons, work / "baseline" / CONSTRAINTS, settings)
        shutil.rmtree(work / "unpacked")
        source = capture
        if not capture.is_dir():  # nothing captured yet: an empty window
            source = work / "no-capture"
            source.mkdir()
        try:
            # the settings are in the constraints it reads (apply_settings)
            report = run_check(source, work, used_stats, used_cons, start_time=start,
                               end_time=end, endpoint_name=target.endpoint_name, log=log)
        except ValueError as e:  # model.evaluate.InputError: names the file and the field
            raise DataError(str(e)) from None
        if source != capture:
            source.rmdir()
        final = parent / stamp
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    write_report_safely(target.run_dir)  # the run's report.html gains this drift check
    return report, final
