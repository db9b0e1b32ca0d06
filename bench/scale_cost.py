"""A paper model of the default pipeline at 100x MNIST on AWS: time and cost per step.

Nothing here calls AWS. The throughputs come from a `make bench-scale` result on this
machine (per vCPU, so they scale to the instance types' vCPUs) and the prices from
``cloud_runners/prices.json`` (the table `harness cloud plan` prices a run with). The
assumptions are printed with the table and are the model's weak points:

- work spreads evenly over vCPUs (Spark's executors, TensorFlow's intra-op threads);
- fixed start-up times: Glue 5 job ~30 s, a SageMaker training or processing job ~3 min
  to provision (not billed) plus ~1 min to download the image and data (billed);
- a tuning job runs ``max_jobs`` trials, ``max_parallel_jobs`` at a time, each a full
  training job;
- the endpoint is priced per hour, apart from the run.

    python -m bench.scale_cost [--results bench/scale_results.json] [--scale 100]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MNIST_IMAGES = 70_000
VCPUS = {"ml.m5.large": 2, "ml.m5.xlarge": 4, "ml.m5.2xlarge": 8, "ml.c5.xlarge": 4,
         "ml.c5.2xlarge": 8, "G.1X": 4, "G.2X": 8}
LOCAL_VCPUS = 2
GLUE_START_S = 30
SAGEMAKER_PROVISION_S = 180  # not billed
SAGEMAKER_DOWNLOAD_S = 60    # billed


def throughputs(results: dict) -> dict:
    """Images per second per vCPU measured by the largest size of a bench-scale result:
    the ETL step (Spark's start-up left in: a conservative figure) and training (images
    times epochs over the train step's seconds; TensorFlow's own start-up left in)."""
    size = max(results["sizes"], key=int)
    r = results["sizes"][size]
    images = int(size)
    train_images = images * 0.8  # the default validation and test fractions: 0.1 each
    etl_rate = images / r["steps"]["etl"]["seconds"] / LOCAL_VCPUS
    train_rate = train_images * results["epochs"] / r["steps"]["train"]["seconds"] / LOCAL_VCPUS
    eval_rate = images * 0.1 / r["steps"]["evaluate"]["seconds"] / LOCAL_VCPUS
    return {"from_images": images, "etl": etl_rate, "train": train_rate, "evaluate": eval_rate}


def model(results: dict, scale: int = 100, epochs: int = 6, cfg=None) -> dict:
    from cloud_runners.cost import Pricing, load_prices
    from harness.config import PipelineConfig

    cfg = cfg or PipelineConfig()
    prices = load_prices()
    pricing = Pricing(prices, cfg.cloud.region)
    rate = throughputs(results)
    images = MNIST_IMAGES * scale
    rows = []

    glue_vcpus = VCPUS[cfg.etl.worker_type] * max(1, cfg.etl.number_of_workers - 1)  # 1 driver
    etl_s = GLUE_START_S + images / (rate["etl"] * glue_vcpus)
    rows.append(("ETL (Glue)", etl_s, pricing.glue(
        "ETL", cfg.etl.worker_type, cfg.etl.number_of_workers, etl_s / 3600, "etl")))

    t = cfg.train
    train_vcpus = VCPUS[t.instance_type] * t.instance_count
    fit_s = images * 0.8 * epochs / (rate["train"] * train_vcpus)
    billed = SAGEMAKER_DOWNLOAD_S + fit_s
    rows.append(("training", SAGEMAKER_PROVISION_S + billed, pricing.instances(
        "training", "training", t.instance_type, t.instance_count, billed / 3600,
        "train.instance_type")))

    tune = cfg.tune
    waves = math.ceil(tune.max_jobs / tune.max_parallel_jobs)
    rows.append((f"tuning ({tune.max_jobs} trials, {tune.max_parallel_jobs} at a time)",
                 waves * (SAGEMAKER_PROVISION_S + billed), pricing.instances(
                     "tuning", "training", t.instance_type, t.instance_count * tune.max_jobs,
                     billed / 3600, "train.instance_type")))

    eval_type = cfg.evaluate.instance_type
    eval_s = SAGEMAKER_DOWNLOAD_S + images * 0.1 / (rate["evaluate"] * VCPUS[eval_type])
    rows.append(("evaluate (processing)", SAGEMAKER_PROVISION_S + eval_s, pricing.instances(
        "evaluate", "processing", eval_type, 1, eval_s / 3600, "evaluate")))

    endpoint = pricing.endpoint("endpoint", cfg.deploy.instance_type,
                                cfg.deploy.initial_instance_count, "deploy.instance_type")
    return {"images": images, "epochs": epochs, "throughput_per_vcpu": rate,
            "steps": [{"step": name, "minutes": round(s / 60, 1), "usd": item.amount,
                       "billed": item.detail} for name, s, item in rows],
            "endpoint_usd_per_hour": endpoint.amount,
            "prices": f"{prices['date']} ({cfg.cloud.region})"}


def print_model(m: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Paper model: {m['images']:,} images ({m['epochs']} epochs), "
                  f"prices of {m['prices']}")
    for col in ("step", "minutes", "USD", "billed"):
        table.add_column(col)
    for r in m["steps"]:
        table.add_row(r["step"], f"{r['minutes']}", f"{r['usd']:.2f}", r["billed"])
    Console().print(table)
    print(f"endpoint: {m['endpoint_usd_per_hour']:.3f} USD per hour until teardown")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "scale_results.json")
    p.add_argument("--scale", type=int, default=100, help="times MNIST's 70,000 images")
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args(argv)
    if not args.results.exists():
        raise SystemExit(f"{args.results}: no bench-scale result; run `make bench-scale` first")
    m = model(json.loads(args.results.read_text()), args.scale, args.epochs)
    print_model(m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
