"""A finished run folder made by hand with the shapes a real local run leaves
(record.json, graph.mmd, steps/*/, the training job's metrics.json, evaluation/),
for the report tests (tests/harness/test_report*.py)."""
import io
import json
from pathlib import Path

from matplotlib.figure import Figure

RUN_ID = "20261201-162925-5fef"
STEPS = [("prepare", "prepare", 0.972), ("etl", "glue", 19.279), ("train", "training", 11.446),
         ("evaluate", "processing", 0.72), ("gate", "gate", 0.002), ("model", "model", 0.002)]
GRAPH = """flowchart TD
    n_prepare[/"prepare<br/><small>prepare</small>"/]
  subgraph sm["state machine"]
      n_etl["etl<br/><small>glue</small>"]
      n_train["train<br/><small>training</small>"]
      n_evaluate["evaluate<br/><small>processing</small>"]
      n_gate["gate<br/><small>gate</small>"]
      n_model["model<br/><small>model</small>"]
      n_retrain["retrain<br/><small>training</small>"]
    n_gate_stop(["stop: gate not met"])
  end
  n_prepare --> n_etl
  n_etl --> n_train
  n_train --> n_evaluate
  n_evaluate --> n_gate
  n_gate --> n_model
  n_gate -->|below threshold| n_retrain
  n_gate -->|not met| n_gate_stop
"""
PER_CLASS = [{"class": c, "precision": 0.9 + c / 100, "recall": 0.95, "support": 50}
             for c in range(3)]


def png(path: Path, size: tuple[int, int] = (20, 20)) -> None:
    fig = Figure(figsize=(size[0] / 20, size[1] / 20))
    fig.add_subplot().imshow([[0, 1], [1, 0]])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=20)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def make_run(root: Path, *, failed: bool = False) -> Path:
    run_dir = root / RUN_ID
    job = run_dir / "training" / "mnist-train-x" / "output"
    steps = []
    for i, (name, kind, secs) in enumerate(STEPS):
        status = "SUCCEEDED"
        if failed and name == "train":
            status = "FAILED"
        elif failed and i > 2:
            status = "PENDING"
        d = run_dir / "steps" / name
        d.mkdir(parents=True)
        rec = {"name": name, "kind": kind, "status": status, "duration_s": secs,
               "started": f"2026-12-01T16:29:{25 + i:02d}.000+00:00", "error": None,
               "input": None, "output": None, "log": None, "reused_from": None,
               "ended": f"2026-12-01T16:29:{26 + i:02d}.000+00:00"}
        if status == "PENDING":
            rec.update(duration_s=None, started=None, ended=None)
        else:
            (d / "input.json").write_text(json.dumps({"Step": name, "Html": "<b>x</b>"}))
            (d / "log.txt").write_text("".join(f"{name} line {n}\n" for n in range(60)))
            rec.update(input=f"steps/{name}/input.json", log=f"steps/{name}/log.txt")
        if status == "SUCCEEDED":
            out = {"Step": name}
            if kind == "training":
                out["ModelArtifacts"] = {"S3ModelArtifacts": f"file://{job}/model.tar.gz"}
            (d / "output.json").write_text(json.dumps(out))
            rec["output"] = f"steps/{name}/output.json"
        if status == "FAILED":
            rec["error"] = "ValueError: the loss is NaN at epoch 2"
        steps.append(rec)
    record = {"run_id": RUN_ID, "backend": "local",
              "status": "FAILED" if failed else "SUCCEEDED",
              "started": "2026-12-01T16:29:25.000+00:00",
              "ended": "2026-12-01T16:29:58.500+00:00", "config": "config.json",
              "resumed_from": None, "failed_step": "train" if failed else None,
              "error": "step 'train' failed: ValueError: the loss is NaN at epoch 2"
              if failed else None, "resume_command": None, "workflow": "mnist",
              "steps": steps}
    (run_dir / "record.json").write_text(json.dumps(record, indent=2))
    (run_dir / "graph.mmd").write_text(GRAPH)
    (job / "data").mkdir(parents=True)
    (job / "data" / "metrics.json").write_text(json.dumps({"history": {
        "loss": [1.2339, 0.41], "accuracy": [0.5905, 0.87],
        "val_loss": [0.1977, 0.15], "val_accuracy": [0.95, 0.961]}}))
    if not failed:
        (run_dir / "evaluation").mkdir()
        (run_dir / "evaluation" / "evaluation.json").write_text(json.dumps({
            "metrics": {"accuracy": 0.942, "loss": 0.2265}, "per_class": PER_CLASS,
            "count": 500, "misclassified": {"count": 29, "shown": [
                {"index": 7, "true": 4, "predicted": 9, "confidence": 0.97}] * 25}}))
        png(run_dir / "evaluation" / "confusion_matrix.png")
        png(run_dir / "evaluation" / "misclassified.png", size=(60, 40))
        (run_dir / "summary.json").write_text(json.dumps({"metrics": {"accuracy": 0.942}}))
    return run_dir
