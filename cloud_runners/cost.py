"""What one cloud run costs: each step's instances x expected hours x on-demand price.

The step kinds say what they use (``Step.cost``: a training job's instances, a Glue
job's workers, an endpoint's instances, each with the step's ``expected_hours``); the
Step Functions transitions are counted from the compiled definition (the states of a
successful run, plus the endpoint polling loops). The prices live in ``prices.json``
next to this file, with the date they were recorded and their source; they are
approximate list prices. Expected durations are not measurements: the estimate says
what they were so a reader can scale them.

No AWS call: this module reads only the workflow, the config and the price table.
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

# How long an endpoint takes to come InService (the state machine polls it meanwhile).
EXPECTED_ENDPOINT_CREATION_S = 600


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


class Pricing:
    """What the step kinds ask to price their work (``Step.cost``): instance-hours of a
    SageMaker use, Glue DPU-hours, an endpoint's hourly price."""

    def __init__(self, prices: dict[str, Any], region: str):
        self.prices = prices
        self.region = region
        _region_prices(prices, region)

    def instances(self, name: str, use: str, instance_type: str, count: int, hours: float,
                  field: str) -> LineItem:
        price = instance_price(self.prices, self.region, use, instance_type, field)
        qty = count * hours
        return LineItem(name, f"{count} x {instance_type} x {hours:g} h", qty,
                        "instance-hour", price, _money(qty * price))

    def glue(self, name: str, worker_type: str, workers: int, hours: float, field: str
             ) -> LineItem:
        glue = self.prices["glue"]
        dpu_per_worker = glue["dpu_per_worker"].get(worker_type)
        if dpu_per_worker is None:
            raise ConfigError(f"no DPU size for Glue worker type '{worker_type}'", field=field,
                              expected="one of " + ", ".join(sorted(glue["dpu_per_worker"])))
        dpu_hour = glue["dpu_hour"].get(self.region)
        if dpu_hour is None:
            raise ConfigError(f"no Glue DPU-hour price for region '{self.region}'",
                              field="cloud.region",
                              expected="one of " + ", ".join(sorted(glue["dpu_hour"])))
        hours = max(hours, glue.get("minimum_billed_seconds", 60) / 3600)
        dpus = workers * dpu_per_worker
        return LineItem(name, f"{workers} x {worker_type} ({dpus:g} DPU) x {hours:g} h",
                        dpus * hours, "DPU-hour", dpu_hour, _money(dpus * hours * dpu_hour))

    def endpoint(self, name: str, instance_type: str, count: int, field: str) -> LineItem:
        price = instance_price(self.prices, self.region, "hosting", instance_type, field)
        return LineItem(name, f"{count} x {instance_type}, per hour until "
                        "`harness cloud teardown`", count, "instance-hour per hour", price,
                        _money(count * price))


def estimate(cfg: PipelineConfig, wf, definition: dict[str, Any],
             prices: dict[str, Any] | None = None) -> CostEstimate:
    """Line items of one run, from the workflow's steps, and the endpoints' hourly price;
    the Step Functions transitions are counted from the compiled ``definition``."""
    from harness.asl import transitions

    prices = prices or load_prices()
    region = cfg.cloud.region
    pricing = Pricing(prices, region)
    est = CostEstimate(region=region, currency=prices.get("currency", "USD"),
                       prices_date=prices["date"], prices_source=prices["source"])
    hourly: list[LineItem] = []
    assumptions: list[str] = []
    for step in wf.steps:
        for item in step.cost(pricing):
            (hourly if item.unit == "instance-hour per hour" else est.items).append(item)
        hours = getattr(step, "expected_hours", None)
        if hours is not None and step.cost(pricing):
            assumptions.append(f"step '{step.state_id}' ({step.kind}) runs ~{hours:g} h")

    counted = transitions(definition)
    waits = [definition["States"][loop[0]].get("Seconds", 30) for loop in counted["loops"]]
    polls = [max(1, math.ceil(EXPECTED_ENDPOINT_CREATION_S / max(1, w))) for w in waits]
    n = counted["once"] + sum(size * (p - 1) for size, p in zip(counted["per_poll"], polls))
    per_1000 = prices["stepfunctions"]["per_1000_state_transitions"].get(region)
    if per_1000 is None:
        raise ConfigError(f"no Step Functions price for region '{region}'", field="cloud.region",
                          expected="one of " + ", ".join(
                              sorted(prices["stepfunctions"]["per_1000_state_transitions"])))
    detail = f"~{n} state transitions ({counted['once']} states"
    if polls:
        detail += f", {sum(polls)} polls"
    est.items.append(LineItem("Step Functions", detail + ")", n, "transition",
                              per_1000 / 1000, _money(n * per_1000 / 1000)))
    est.items.extend(hourly)
    est.endpoint_per_hour = _money(sum(i.amount for i in hourly))
    est.run_total = _money(sum(i.amount for i in est.items if i not in hourly))
    est.assumptions = assumptions + [
        f"an endpoint takes ~{EXPECTED_ENDPOINT_CREATION_S // 60} min to come InService "
        "while the state machine polls it",
        "endpoints are not in the run total: they cost their hourly price until teardown",
        "S3 storage, data transfer, CloudWatch and free tiers are left out",
    ]
    return est


def cost_table(cost: CostEstimate | dict[str, Any]):
    """The estimate as a rich table (plan and preflight print it)."""
    from rich.table import Table

    c = cost if isinstance(cost, dict) else cost.to_dict()
    table = Table(title=f"estimated cost, {c['region']} (approximate on-demand list prices "
                        f"of {c['prices_date']})")
    table.add_column("item")
    table.add_column("detail")
    table.add_column("unit price", justify="right")
    table.add_column(c["currency"], justify="right")
    for i in c["items"]:
        table.add_row(i["name"], i["detail"], f"{i['unit_price']:g}/{i['unit']}",
                      f"{i['amount']:.4f}")
    table.add_row("[bold]one run[/]", "everything but the endpoints", "",
                  f"[bold]{c['run_total']:.2f}[/]")
    table.caption = (f"endpoints: ${c['endpoint_per_hour']:.3f} per hour until "
                     "`harness cloud teardown`")
    return table
