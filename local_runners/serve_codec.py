"""TF Serving REST bodies for the embedded model server: JSON in, named arrays out, and back.

``decode_predict_request`` turns a ``:predict`` body (row format ``{"instances": ...}`` or
columnar ``{"inputs": ...}``, optional ``"signature_name"``) into the signature to call and
one numpy array per input, checked against the signature's dtypes and shapes;
``encode_predictions`` turns the outputs into TF Serving's response (``"predictions"`` or
``"outputs"``). Before parsing, the body's nesting depth is checked against ``max_depth``
(``check_json_depth``, measured by ``local_runners.serve_json_depth``: nothing recurses on
client input); after it, NaN, infinities and numbers beyond the input dtype are rejected
naming the value, and with ``ranges`` (what the model declares,
``local_runners.serve_input_range``) so are values outside them. A bad request raises
``RequestError`` with the HTTP status and a message saying what was expected;
``error_body`` turns any exception into the ``{"error": "..."}`` body and its status. Pure
functions of bytes and arrays: no aiohttp, no TensorFlow (the model and signature objects
come from ``local_runners.serve_model``).
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import orjson

from local_runners.serve_input_range import out_of_range
from local_runners.serve_json_depth import scan_json

if TYPE_CHECKING:
    from local_runners.serve_model import LoadedModel, Signature, TensorInfo

log = logging.getLogger(__name__)

JSON = "application/json"
DEFAULT_MAX_JSON_DEPTH = 32      # a tensor has at most 32 dimensions in numpy


class RequestError(Exception):
    """A request the server answers with ``{"error": message}`` and ``status``; with
    ``close`` the connection is closed after the answer (the rest of the request is not
    worth reading)."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def check_json_depth(body: bytes, limit: int) -> bool:
    """400 if ``body`` nests arrays/objects more than ``limit`` deep (checked before any
    parsing); returns whether the literals true/false occur in it."""
    depth, literals = scan_json(body)
    if depth > limit:
        raise RequestError(400, f"the JSON body nests {depth} levels deep; the limit is "
                           f"{limit} (max_json_depth): send tensors as plain nested lists "
                           '({"instances": [[...], ...]} is 3 deep)')
    return literals


def _loads(body: bytes) -> Any:
    """Parse JSON; NaN/Infinity (which strict JSON forbids) get their own message. Callers
    check the nesting depth first (``check_json_depth``)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as strict_error:
        def non_finite(token: str):
            raise RequestError(400, f"the request contains {token}; expected finite numbers")
        try:
            return json.loads(body, parse_constant=non_finite)
        except RequestError:
            raise
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise RequestError(400, f"malformed JSON ({strict_error}); expected a JSON object "
                               'such as {"instances": [[...], ...]}') from None


def _to_array(value: Any, info: TensorInfo, maybe_bools: bool = False) -> np.ndarray:
    def expected() -> str:      # only built for an error message
        return f"{info.dtype.name} numbers in shape {info.shape_text()}"

    try:
        raw = np.array(value)
    except ValueError:
        raise RequestError(400, f"input '{info.name}' is ragged (rows of different lengths); "
                           f"expected {expected()}") from None
    if raw.size and raw.dtype.kind not in "iuf":
        kind = {"U": "strings", "S": "strings", "b": "booleans", "O": "nulls or mixed values"}
        raise RequestError(400, f"input '{info.name}' holds {kind.get(raw.dtype.kind, raw.dtype)}; "
                           f"expected {expected()}")
    if maybe_bools and raw.dtype.kind in "iuf":    # numpy turned true/false into 1/0
        where = _first_bool(value)
        if where is not None:
            raise RequestError(400, f"input '{info.name}' holds a boolean at {where} among "
                               f"numbers; expected {expected()}")
    if raw.ndim != len(info.shape) or any(
            want is not None and got != want for got, want in zip(raw.shape, info.shape)):
        hint = (" (wrap a single instance in a list)"
                if raw.ndim == len(info.shape) - 1 else "")
        raise RequestError(400, f"input '{info.name}' has shape {list(raw.shape)}; "
                           f"expected {info.shape_text()} (N = batch size){hint}")
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise RequestError(400, f"input '{info.name}' holds {_first(~np.isfinite(raw), raw)}; "
                           f"expected finite {expected()}")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = raw.astype(info.dtype, copy=False)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise RequestError(400, f"input '{info.name}' holds {_first(~np.isfinite(arr), raw)}, "
                           f"beyond the range of {info.dtype.name}; expected {expected()}")
    if arr.dtype.kind in "iu" and raw.dtype.kind == "f":
        bounds = np.iinfo(arr.dtype)
        outside = (raw < bounds.min) | (raw > bounds.max)
        if outside.any():
            raise RequestError(400, f"input '{info.name}' holds {_first(outside, raw)}, beyond "
                               f"the range of {info.dtype.name}; expected {expected()}")
    return arr


def _first_bool(value: Any) -> list[int] | None:
    """The index of the first JSON true/false in nested lists (walked without recursion)."""
    stack = [(value, [])]
    while stack:
        item, where = stack.pop()
        if isinstance(item, bool):
            return where
        if isinstance(item, list):
            stack.extend((x, where + [i]) for i, x in reversed(list(enumerate(item))))
    return None


def _first(mask: np.ndarray, values: np.ndarray) -> str:
    """The first value where ``mask`` holds, and its index: "1e+39 at [0, 3]"."""
    where = tuple(int(i) for i in np.argwhere(mask)[0])
    return f"{values[where]:.6g} at {list(where)}"


def parse_predict_request(doc: Any, sig: Signature, maybe_bools: bool = True
                          ) -> tuple[dict[str, np.ndarray], str]:
    """Turn a TF Serving predict body into named arrays; returns (arrays, "row"|"columnar").
    ``maybe_bools=False`` (the body has no true/false) skips looking for booleans."""
    names = list(sig.inputs)
    what = 'a JSON object with "instances" (row format) or "inputs" (columnar format)'
    if not isinstance(doc, dict):
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
            type(doc), "number")
        raise RequestError(400, f"the request body is a JSON {kind}; expected {what}")
    if ("instances" in doc) == ("inputs" in doc):
        raise RequestError(400, f"expected {what}, exactly one of them; got keys {sorted(doc)}")
    if "instances" in doc:
        fmt, rows = "row", doc["instances"]
        if not isinstance(rows, list):
            raise RequestError(400, '"instances" must be a list of instances')
        if not rows:
            raise RequestError(400, "empty batch: \"instances\" holds no instance; "
                               "expected at least one")
        if all(isinstance(r, dict) for r in rows):
            values = {}
            for name in names:
                missing = [i for i, r in enumerate(rows) if name not in r]
                if missing:
                    raise RequestError(400, f"instance {missing[0]} has no input '{name}'; "
                                       f"expected objects with keys {names}")
                values[name] = [r[name] for r in rows]
            extra = sorted({k for r in rows for k in r} - set(names))
        elif any(isinstance(r, dict) for r in rows):
            raise RequestError(400, "instances mix objects and plain values; use one form")
        else:
            if len(names) != 1:
                raise RequestError(400, f"the signature has several inputs {names}; expected "
                                   "each instance as an object keyed by input name")
            values, extra = {names[0]: rows}, []
    else:
        fmt, cols = "columnar", doc["inputs"]
        if isinstance(cols, dict):
            missing = [n for n in names if n not in cols]
            if missing:
                raise RequestError(400, f'"inputs" has no input {missing[0]!r}; expected keys {names}')
            values, extra = {n: cols[n] for n in names}, sorted(set(cols) - set(names))
        else:
            if len(names) != 1:
                raise RequestError(400, f'the signature has several inputs {names}; expected '
                                   '"inputs" as an object keyed by input name')
            values, extra = {names[0]: cols}, []
    if extra:
        raise RequestError(400, f"unknown input(s) {extra}; the signature's inputs are {names}")
    arrays = {n: _to_array(v, sig.inputs[n], maybe_bools) for n, v in values.items()}
    sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if 0 in sizes:
        raise RequestError(400, "empty batch: the inputs hold no instance; expected at least one")
    if len(sizes) > 1:
        raise RequestError(400, f"inputs disagree on the batch size: {sorted(sizes)}")
    return arrays, fmt


def decode_predict_request(model: "LoadedModel", body: bytes, *,
                           max_depth: int = DEFAULT_MAX_JSON_DEPTH,
                           ranges: Mapping[str, tuple[float, float]] | None = None
                           ) -> tuple[Signature, dict[str, np.ndarray], str]:
    """A TF Serving predict body -> (signature, named arrays, "row"|"columnar");
    raises RequestError. ``ranges``: {input: (min, max)} the values must lie in."""
    maybe_bools = check_json_depth(body, max_depth)
    doc = _loads(body)
    sig = model.signature(doc.get("signature_name") if isinstance(doc, dict) else None)
    arrays, fmt = parse_predict_request(doc, sig, maybe_bools)
    if ranges:
        problem = out_of_range(arrays, ranges)
        if problem:
            raise RequestError(400, problem)
    return sig, arrays, fmt


def error_body(e: BaseException) -> tuple[int, bytes]:
    if isinstance(e, RequestError):
        return e.status, orjson.dumps({"error": e.message})
    log.error("prediction failed: %s: %s", type(e).__name__, e)
    return 500, orjson.dumps({"error": f"prediction failed: {type(e).__name__}: {e}"})


def encode_predictions(outputs: dict[str, np.ndarray], fmt: str) -> bytes:
    """TF Serving's response: row format lists one entry per instance (an object when the
    signature has several outputs); columnar maps output name -> batch."""
    opt = orjson.OPT_SERIALIZE_NUMPY
    if fmt == "columnar":
        body = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        return orjson.dumps({"outputs": body}, option=opt)
    if len(outputs) == 1:
        return orjson.dumps({"predictions": next(iter(outputs.values()))}, option=opt)
    cols = {k: (v.tolist() if v.ndim == 1 else np.ascontiguousarray(v)) for k, v in outputs.items()}
    n = len(next(iter(outputs.values())))
    rows = [{k: c[i] for k, c in cols.items()} for i in range(n)]
    return orjson.dumps({"predictions": rows}, option=opt)
