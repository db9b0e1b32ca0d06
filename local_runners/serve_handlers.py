"""The SageMaker ``inference.py`` handler contract, as the SageMaker TensorFlow Serving
container implements it, for the embedded model server.

``load_inference_handlers`` imports ``code/inference.py`` (or takes any object with the
functions) and requires either ``handler(data, context)`` or both
``input_handler(data, context)`` and ``output_handler(response, context)``; anything else
raises ``HarnessError``. ``invoke_handlers`` runs one ``/invocations`` body through them:
``handler`` answers on its own; ``input_handler`` must return a TF Serving request body (str
or bytes), which goes to the model, and ``output_handler`` gets the answer as a
``TfsResponse`` (the parts of ``requests.Response`` it may use). Both paths must return
``(body, content_type)``. A handler failure becomes ``{"error": ...}`` with the status of the
failed predict, 400 for a ``ValueError``, else 500 (the container answers 500 for all).
"""
from __future__ import annotations

import collections
import importlib.util
import io
import json
import logging
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import orjson

from harness.errors import HarnessError
from local_runners.serve_codec import JSON

log = logging.getLogger(__name__)

# What the SageMaker TensorFlow Serving container hands to inference.py handlers.
Context = collections.namedtuple(
    "Context", "model_name, model_version, method, rest_uri, grpc_port, channel, "
    "custom_attributes, request_content_type, accept_header, content_length")


class TfsResponse:
    """What ``output_handler`` receives: the parts of ``requests.Response`` it may use."""

    def __init__(self, status_code: int, content: bytes):
        self.status_code = status_code
        self.content = content
        self.headers = {"Content-Type": JSON}

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.content)


def load_inference_handlers(source: Any) -> SimpleNamespace:
    """Handlers from a path to ``inference.py`` or any object with the handler functions."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        spec = importlib.util.spec_from_file_location(f"inference_{uuid.uuid4().hex[:8]}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise HarnessError(f"cannot import the inference handlers ({type(e).__name__}: {e})",
                               file=str(path)) from None
        source, where = module, str(path)
    else:
        where = getattr(source, "__file__", None) or repr(source)
    handler = getattr(source, "handler", None)
    inp, out = getattr(source, "input_handler", None), getattr(source, "output_handler", None)
    if handler is None and (inp is None or out is None):
        raise HarnessError("handlers are not implemented correctly", file=where,
                           expected="a handler(data, context) function, or both "
                           "input_handler(data, context) and output_handler(response, context)")
    return SimpleNamespace(handler=handler, input_handler=inp, output_handler=out, source=where)


def invoke_handlers(h: SimpleNamespace, body: bytes, context: Context,
                    predict: Callable[[bytes], tuple[int, bytes]]) -> tuple[int, bytes, str]:
    """One ``/invocations`` request through the handlers: (status, body, content type);
    never raises. ``predict`` answers a TF Serving predict body with (status, JSON body)
    and never raises."""
    response = None
    try:
        if h.handler is not None:
            result = h.handler(io.BytesIO(body), context)
        else:
            tfs_body = h.input_handler(io.BytesIO(body), context)
            if isinstance(tfs_body, str):
                tfs_body = tfs_body.encode("utf-8")
            if not isinstance(tfs_body, (bytes, bytearray)):
                raise TypeError(f"input_handler returned {type(tfs_body).__name__}; expected "
                                "the TF Serving request body as str or bytes (json.dumps it)")
            response = TfsResponse(*predict(bytes(tfs_body)))
            result = h.output_handler(response, context)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"the handler returned {type(result).__name__}; expected a "
                            "(body, content_type) tuple")
        out, ctype = result
        return 200, out.encode("utf-8") if isinstance(out, str) else bytes(out), str(ctype)
    except Exception as e:
        # The SageMaker container answers 500 for any handler exception; locally we keep
        # the status of a failed predict (or 400 for a ValueError) so the cause is clear.
        if response is not None and response.status_code >= 400:
            status = response.status_code
        else:
            status = 400 if isinstance(e, ValueError) else 500
        log.info("inference handler error (%d): %s", status, e)
        return status, orjson.dumps({"error": str(e)}), JSON
