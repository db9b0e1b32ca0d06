"""Request handlers for the SageMaker TensorFlow Serving container (``code/inference.py``).

The container calls ``input_handler(data, context)`` with the request body as a stream and
posts what it returns to TF Serving's REST API; ``output_handler(response, context)`` gets
TF Serving's answer (a ``requests.Response``) and returns ``(body, content_type)``. The
local model server calls the same two functions the same way.

Accepted request bodies (``application/json``):
- a TF Serving predict body: ``{"instances": [[...], ...]}`` or ``{"inputs": ...}``;
- a bare list of images: ``[[p0, p1, ...], ...]`` (each a flattened image, values in [0, 1]).

Runs inside the container: standard library only.
"""
import json

JSON = "application/json"


def _media_type(header):
    return (header or JSON).split(";")[0].strip().lower()


def input_handler(data, context):
    """Return the TF Serving request body (a JSON string) for this request."""
    ctype = _media_type(context.request_content_type)
    if ctype != JSON:
        raise ValueError(f"unsupported Content-Type {ctype!r}; expected application/json")
    text = data.read().decode("utf-8").strip()
    if not text:
        raise ValueError('empty request body; expected {"instances": [[...], ...]} or a list '
                         "of flattened images")
    if text[0] == "{":
        return text  # already a TF Serving body: the server validates it
    if text[0] == "[":
        return '{"instances": ' + text + "}"
    raise ValueError('the request body is not a JSON object or list; expected '
                     '{"instances": [[...], ...]} or a list of flattened images')


def output_handler(response, context):
    """Pass TF Serving's JSON through; turn its errors into an exception with its message."""
    if response.status_code != 200:
        try:
            message = json.loads(response.content.decode("utf-8"))["error"]
        except (ValueError, KeyError, TypeError):
            message = response.content.decode("utf-8", "replace")
        raise ValueError(message)
    accept = _media_type(context.accept_header)
    if accept not in (JSON, "*/*"):
        raise ValueError(f"unsupported Accept {accept!r}; this model answers application/json")
    return response.content, JSON
