"""Checks for option values where they enter (``ServingOptions``, ``ModelServer``, the
``serve`` commands): a wrong value raises ``ConfigError`` naming the option, the accepted
range and the value given, instead of surfacing later as a silent misbehaviour (a port
above 65535 wrapping round to another one, a negative poll interval spinning a core).
"""
from __future__ import annotations

import math
import re
from typing import Any

from harness.errors import ConfigError

# What may name a served model: it is one segment of /v1/models/<name>[...]:predict.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def check_number(value: Any, field: str, *, minimum: float | None = None,
                 maximum: float | None = None, above: float | None = None,
                 integer: bool = False, unit: str = "", unset: str | None = None,
                 note: str = "") -> Any:
    """``value`` if it is a finite number (an int when ``integer``) with
    ``minimum <= value <= maximum`` and ``value > above``. None passes when ``unset`` says
    what None means; ``unit`` and ``note`` go into the expectation of the error."""
    if value is None and unset is not None:
        return None
    kind = "an integer" if integer else "a number"
    bounds = [f"{op} {bound:g}" for op, bound in (("above", above), (">=", minimum),
                                                   ("<=", maximum)) if bound is not None]
    expected = " ".join([kind, " and ".join(bounds)]).strip()
    if unit:
        expected += f" ({unit})"
    if unset is not None:
        expected += f", or unset ({unset})"
    if note:
        expected += f"; {note}"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise ConfigError(f"not {kind}", field=field, expected=expected, got=value)
    if ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)
            or (above is not None and not value > above)):
        raise ConfigError("out of range", field=field, expected=expected, got=value)
    return value


def check_port(value: Any, field: str = "port") -> int:
    return check_number(value, field, minimum=0, maximum=65535, integer=True,
                        note="0 picks any free port")


def check_percent(value: Any, field: str) -> float:
    return check_number(value, field, minimum=0, maximum=100)


def check_host(value: Any, field: str = "host") -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ConfigError("not a host name or address", field=field,
                          expected="an address such as 127.0.0.1", got=value)
    return value


def check_model_name(value: Any, field: str = "model_name") -> str:
    if not isinstance(value, str) or not _MODEL_NAME.match(value):
        raise ConfigError("not a usable model name", field=field,
                          expected="1-128 letters, digits, '_', '-' or '.' (it is a path "
                          "segment of /v1/models/<name>)", got=value)
    return value
