"""What one cloud run costs: instance types x expected hours x on-demand price.

The prices live in ``prices.json`` next to this file, with the date they were recorded
and their source; they are approximate list prices. The expected durations below are
config-free defaults (a run of the default MNIST pipeline), not measurements: the
estimate says what they were so a reader can scale it.

No AWS call: this module reads only the config and the price table.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.config import PipelineConfig
from harness.errors import ConfigError

PRICES_FILE = Path(__file__).with_name("prices.json")

# Expected durations of one run (hours), used when nothing better is known.
EXPECTED_ETL_HOURS = 0.1
EXPECTED_TRAINING_HOURS = 0.25
EXPECTED_ENDPOINT_CREATION_S = 600
# The state machine's endpoint poll (harness.asl.compile_state_machine's default).
ENDPOINT_POLL_S = 30
# States entered once per run: RunEtl, Train, ReadGateMetric, GateValue, Gate,
# CreateModel, CreateEndpointConfig, CreateEndpoint, Deployed; then per poll:
# WaitForEndpoint, DescribeEndpoint, EndpointInService?.
FIXED_TRANSITIONS = 9
TRANSITIONS_PER_POLL = 3


@dataclass
class LineItem:
    name: str
    detail: str
    quantity: float
    unit: str
    unit_price: float
    amount: float


@dataclass
class CostEstimate:
    region: str
    currency: str
    prices_date: str
    prices_source: str
    items: list[LineItem] = field(default_factory=list)
    run_total: float = 0.0
    endpoint_per_hour: float = 0.0
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"one run: ~${self.run_total:.2f}; endpoint: ${self.endpoint_per_hour:.3f} "
                f"per hour until `harness cloud teardown` (on-demand list prices of "
                f"{self.prices_date}, approximate)")


@lru_cache(maxsize=1)
def load_prices(path: str | None = None) -> dict[str, Any]:
    p = Path(path) if path else PRICES_FILE
    return json.loads(p.read_text())


def _region_prices(prices: dict[str, Any], region: str) -> dict[str, Any]:
    try:
        return prices["sagemaker"][region]
    except KeyError:
        raise ConfigError(f"no prices recorded for region '{region}'", field="cloud.region",
                          expected="one of " + ", ".join(sorted(prices["sagemaker"])),
                          hint=f"add the region to {PRICES_FILE.name}") from None


def instance_price(prices: dict[str, Any], region: str, use: str, instance_type: str,
                   field_name: str) -> float:
    """On-demand USD/hour of an instance type for ``training`` or ``hosting``."""
    table = _region_prices(prices, region)[use]
    try:
        return float(table[instance_type])
    except KeyError:
        raise ConfigError(f"no {use} price for instance type '{instance_type}' in {region}",
                          field=field_name, expected="one of " + ", ".join(sorted(table)),
                          hint=f"pick a known type or add it to {PRICES_FILE.name}") from None


def _money(x: float) -> float:
    return round(x, 6)


def estimate(cfg: PipelineConfig, prices: dict[str, Any] | None = None) -> CostEstimate:
    """Line items of one run and the endpoint's hourly price."""
    prices = prices or load_prices()
    region = cfg.cloud.region
    _region_prices(prices, region)
    est = CostEstimate(region=region, currency=prices.get("currency", "USD"),
                       prices_date=prices["date"], prices_source=prices["source"])

    # Glue: workers x DPU per worker x hours x DPU-hour price; billed per second,
    # with a minimum billed duration.
    glue = prices["glue"]
    dpu_per_worker = glue["dpu_per_worker"].get(cfg.etl.worker_type)
    if dpu_per_worker is None:
        raise ConfigError(f"no DPU size for Glue worker type '{cfg.etl.worker_type}'",
                          field="etl.worker_type",
                          expected="one of " + ", ".join(sorted(glue["dpu_per_worker"])))
    dpu_hour = glue["dpu_hour"].get(region)
    if dpu_hour is None:
        raise ConfigError(f"no Glue DPU-hour price for region '{region}'", field="cloud.region",
                          expected="one of " + ", ".join(sorted(glue["dpu_hour"])))
    etl_hours = max(EXPECTED_ETL_HOURS, glue.get("minimum_billed_seconds", 60) / 3600)
    dpus = cfg.etl.number_of_workers * dpu_per_worker
    est.items.append(LineItem(
        "Glue ETL", f"{cfg.etl.number_of_workers} x {cfg.etl.worker_type} "
        f"({dpus:g} DPU) x {etl_hours:g} h", dpus * etl_hours, "DPU-hour", dpu_hour,
        _money(dpus * etl_hours * dpu_hour)))

    # Training: instance count x price x expected hours.
    t = cfg.train
    train_price = instance_price(prices, region, "training", t.instance_type,
                                 "train.instance_type")
    inst_hours = t.instance_count * EXPECTED_TRAINING_HOURS
    est.items.append(LineItem(
        "SageMaker training", f"{t.instance_count} x {t.instance_type} x "
        f"{EXPECTED_TRAINING_HOURS:g} h", inst_hours, "instance-hour", train_price,
        _money(inst_hours * train_price)))

    # Step Functions (standard workflow): state transitions.
    polls = math.ceil(EXPECTED_ENDPOINT_CREATION_S / ENDPOINT_POLL_S)
    transitions = FIXED_TRANSITIONS + TRANSITIONS_PER_POLL * polls
    per_1000 = prices["stepfunctions"]["per_1000_state_transitions"].get(region)
    if per_1000 is None:
        raise ConfigError(f"no Step Functions price for region '{region}'", field="cloud.region",
                          expected="one of " + ", ".join(
                              sorted(prices["stepfunctions"]["per_1000_state_transitions"])))
    est.items.append(LineItem(
        "Step Functions", f"~{transitions} state transitions ({polls} endpoint polls)",
        transitions, "transition", per_1000 / 1000, _money(transitions * per_1000 / 1000)))

    # Hosting: billed per hour while the endpoint exists.
    d = cfg.deploy
    host_price = instance_price(prices, region, "hosting", d.instance_type,
                                "deploy.instance_type")
    est.endpoint_per_hour = _money(d.initial_instance_count * host_price)
    est.items.append(LineItem(
        "SageMaker endpoint", f"{d.initial_instance_count} x {d.instance_type}, per hour "
        "until `harness cloud teardown`", d.initial_instance_count, "instance-hour",
        host_price, est.endpoint_per_hour))

    est.run_total = _money(sum(i.amount for i in est.items if i.name != "SageMaker endpoint"))
    est.assumptions = [
        f"ETL runs ~{EXPECTED_ETL_HOURS:g} h (Glue bills per second, at least "
        f"{glue.get('minimum_billed_seconds', 60)} s)",
        f"training runs ~{EXPECTED_TRAINING_HOURS:g} h (the job may run up to "
        f"train.max_runtime_s = {t.max_runtime_s} s)",
        f"the endpoint takes ~{EXPECTED_ENDPOINT_CREATION_S // 60} min to come InService, "
        f"polled every {ENDPOINT_POLL_S} s",
        "the endpoint is not in the run total: it costs its hourly price until teardown",
        "S3 storage, data transfer, CloudWatch and free tiers are left out",
    ]
    return est
