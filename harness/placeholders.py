"""Placeholders: values a pipeline definition names before any run exists.

A step's request is written once, with placeholders where a value is only known when a
run executes: the run id, the run's storage location, a value of the execution input, a
field of an earlier step's output. Every placeholder is a JSONPath into the run's
*state document*, which has the same shape on every backend:

    {"RunId": ..., "BaseUri": ..., <execution input>..., <step result key>: <its output>...}

In the Step Functions state machine that document is the state input (each Task writes
its result to ``$.<ResultKey>``; the client-side steps that ran before the execution
are in the execution input under their result keys). Locally the executor keeps the same
document. So one request body becomes:

- on the local backend, concrete values (:func:`resolve`);
- in the ASL, ``Parameters`` with ``"Key.$": "$.Path"`` or ``States.Format(...)``
  (:func:`asl_parameters`).

A placeholder used as a whole value keeps its JSON type; a placeholder inside a string
(``f"{RUN_ID}-train"``, ``run_path("data", "raw")``) makes a string, as
``States.Format`` does in the cloud.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterator

from harness.errors import ConfigError, HarnessError

_TOKEN = re.compile(r"⟦([^⟧]+)⟧")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")

# Keys of the state document every backend fills in.
RUN_ID_KEY = "RunId"
BASE_URI_KEY = "BaseUri"
# Where the run's code is staged: <BaseUri>/code when the run uploaded it; a run started by
# another pipeline (harness.steps.start_execution) reuses the code of the run it retrains.
CODE_URI_KEY = "CodeUri"
# Only in the cloud: where the run lives in S3 (BaseUri = s3://<Bucket>/<Prefix>).
BUCKET_KEY = "Bucket"
PREFIX_KEY = "Prefix"
BUILT_IN_KEYS = (RUN_ID_KEY, BASE_URI_KEY, CODE_URI_KEY, BUCKET_KEY, PREFIX_KEY)


class Placeholder:
    """A JSONPath (``$.A.B[0]``) into the run's state document.

    ``p["Field"]`` goes one level down; ``str(p)`` (also inside an f-string) is a token
    that :func:`resolve` and :func:`asl_parameters` replace.
    """

    __slots__ = ("path",)

    def __init__(self, path: str):
        if not path.startswith("$"):
            raise ValueError(f"a placeholder path starts with '$', got {path!r}")
        self.path = path

    def __getitem__(self, key: str | int) -> "Placeholder":
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            return Placeholder(f"{self.path}[{key}]")
        if isinstance(key, str) and _KEY.match(key):
            return Placeholder(f"{self.path}.{key}")
        raise ConfigError(f"cannot address {key!r} in {self.path}", field=self.path,
                          expected="a field name of letters, digits and '_' (not starting "
                          "with a digit), or a list index >= 0")

    def __str__(self) -> str:
        return f"⟦{self.path}⟧"

    def __format__(self, spec: str) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"Placeholder({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Placeholder) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)


RUN_ID = Placeholder(f"$.{RUN_ID_KEY}")
BASE_URI = Placeholder(f"$.{BASE_URI_KEY}")
CODE_URI = Placeholder(f"$.{CODE_URI_KEY}")


def code_uri_of(base_uri: str) -> str:
    """Where a run stages its code (``CodeUri``), under its own location."""
    return f"{base_uri.rstrip('/')}/code"


def run_path(*parts: str) -> str:
    """A location inside the run's storage: ``file://.../runs/<id>/<parts>`` locally,
    ``s3://<bucket>/<prefix>/<id>/<parts>`` in the cloud."""
    out = str(BASE_URI)
    for part in parts:
        part = str(part).strip("/")
        if part:
            out += "/" + part
    return out


def unique_name(prefix: str) -> str:
    """``<prefix>-<run id>``: SageMaker job and resource names must be new on every run."""
    return f"{prefix}-{RUN_ID}"


class ExecutionInput(Placeholder):
    """The values a run is started with, as the Step Functions Data Science SDK's
    ``ExecutionInput``: ``ExecutionInput(schema={"Epochs": str})["Epochs"]``.

    The built-in values (``RunId``, ``BaseUri``) are always there; ``validate`` checks a
    run's inputs against the schema.
    """

    __slots__ = ("schema",)

    def __init__(self, schema: dict[str, type] | None = None):
        super().__init__("$")
        schema = dict(schema or {})
        for key, typ in schema.items():
            if not isinstance(key, str) or not _KEY.match(key):
                raise ConfigError("an execution input key must be an identifier",
                                  field=f"ExecutionInput.schema[{key!r}]",
                                  expected="letters, digits and '_'", got=key)
            if key in BUILT_IN_KEYS:
                raise ConfigError(f"'{key}' is set by the harness on every run",
                                  field=f"ExecutionInput.schema[{key!r}]",
                                  expected="another name than " + ", ".join(BUILT_IN_KEYS))
            if typ not in (str, int, float, bool, dict, list):
                raise ConfigError("unsupported execution input type",
                                  field=f"ExecutionInput.schema[{key!r}]",
                                  expected="str, int, float, bool, dict or list", got=typ)
        self.schema = schema

    def __getitem__(self, key: str | int) -> Placeholder:
        if key not in self.schema and key not in (RUN_ID_KEY, BASE_URI_KEY):
            raise ConfigError(f"the execution input has no key {key!r}", field=str(key),
                              expected="one of " + ", ".join(
                                  [*self.schema, RUN_ID_KEY, BASE_URI_KEY]))
        return Placeholder(f"$.{key}")

    def __repr__(self) -> str:
        return f"ExecutionInput(schema={ {k: t.__name__ for k, t in self.schema.items()} })"

    def validate(self, inputs: dict[str, Any] | None) -> dict[str, Any]:
        """The run's inputs, checked against the schema (every key, right types)."""
        inputs = dict(inputs or {})
        unknown = sorted(set(inputs) - set(self.schema))
        if unknown:
            raise ConfigError(f"unknown execution input {', '.join(unknown)}",
                              field="inputs", expected="keys of the schema: "
                              + (", ".join(self.schema) or "none"))
        for key, typ in self.schema.items():
            if key not in inputs:
                raise ConfigError(f"the execution input lacks {key!r}", field=f"inputs.{key}",
                                  expected=f"a {typ.__name__} value")
            value = inputs[key]
            ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ConfigError("wrong type in the execution input", field=f"inputs.{key}",
                                  expected=f"a {typ.__name__}", got=value)
        return inputs

    def json_schema(self) -> dict[str, Any]:
        names = {str: "string", int: "integer", float: "number", bool: "boolean",
                 dict: "object", list: "array"}
        return {"type": "object", "required": list(self.schema),
                "properties": {k: {"type": names[t]} for k, t in self.schema.items()}}


# --------------------------------------------------------------------------- reading


def lookup(document: Any, path: str) -> Any:
    """The value at JSONPath ``path`` (``$``, ``.name``, ``[index]``) of ``document``."""
    if not path.startswith("$"):
        raise ValueError(f"not a JSONPath: {path!r}")
    node, pos = document, 1
    walked = "$"
    while pos < len(path):
        m = _PATH_PART.match(path, pos)
        if m is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {path[pos:]!r}")
        name, index = m.group(1), m.group(2)
        if name is not None:
            if not isinstance(node, dict) or name not in node:
                raise KeyError(walked, name, sorted(node) if isinstance(node, dict) else None)
            node = node[name]
            walked += "." + name
        else:
            i = int(index)
            if not isinstance(node, list) or i >= len(node):
                raise KeyError(walked, f"[{i}]", None)
            node = node[i]
            walked += f"[{i}]"
        pos = m.end()
    return node


def _resolved(document: dict[str, Any], path: str, where: str) -> Any:
    try:
        return lookup(document, path)
    except KeyError as e:
        at, missing, known = e.args
        hint = None
        if at == "$" and missing in (BUCKET_KEY, PREFIX_KEY):
            hint = f"${missing} exists only on the emulator and cloud backends"
        raise HarnessError(f"{where}: {path} has no value in this run ({at} has no "
                           f"{missing!r})", field=where,
                           expected="one of " + ", ".join(known) if known else None,
                           hint=hint) from None


def _text(value: Any) -> str:
    """A value inside a string, as ``States.Format`` writes it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) \
        else str(value)


def resolve(body: Any, document: dict[str, Any], where: str = "request") -> Any:
    """``body`` with every placeholder replaced by its value in ``document``."""
    if isinstance(body, Placeholder):
        return _resolved(document, body.path, where)
    if isinstance(body, str):
        tokens = _TOKEN.findall(body)
        if not tokens:
            return body
        if _TOKEN.fullmatch(body):
            return _text(_resolved(document, tokens[0], where))
        return _TOKEN.sub(lambda m: _text(_resolved(document, m.group(1), where)), body)
    if isinstance(body, dict):
        return {k: resolve(v, document, f"{where}.{k}") for k, v in body.items()}
    if isinstance(body, (list, tuple)):
        return [resolve(v, document, f"{where}[{i}]") for i, v in enumerate(body)]
    return body


def references(body: Any) -> Iterator[str]:
    """Every JSONPath ``body`` refers to."""
    if isinstance(body, Placeholder):
        yield body.path
    elif isinstance(body, str):
        yield from _TOKEN.findall(body)
    elif isinstance(body, dict):
        for v in body.values():
            yield from references(v)
    elif isinstance(body, (list, tuple)):
        for v in body:
            yield from references(v)


def has_placeholders(value: Any) -> bool:
    return next(references(value), None) is not None


# ------------------------------------------------------------------------------- ASL


def format_literal(text: str) -> str:
    # States.Format escapes: \ ' { } are backslash-escaped in the template.
    return re.sub(r"([\\'{}])", r"\\\1", text)


def asl_value(value: Any) -> str | None:
    """The JSONPath or intrinsic for a value holding placeholders; None for a constant.

    A whole placeholder keeps its JSON type (a plain path); a string with placeholders in
    it is ``States.Format`` (numbers written as text, as locally).
    """
    if isinstance(value, Placeholder):
        return value.path
    if not isinstance(value, str):
        return None
    tokens = _TOKEN.findall(value)
    if not tokens:
        return None
    template = "".join("{}" if i % 2 else format_literal(part)
                       for i, part in enumerate(_TOKEN.split(value)))
    return f"States.Format('{template}', {', '.join(tokens)})"


def asl_parameters(body: Any, where: str = "Parameters") -> Any:
    """A request body with placeholders as ASL ``Parameters`` (``"Key.$": ...``)."""
    if isinstance(body, dict):
        out: dict[str, Any] = {}
        for key, value in body.items():
            sym = asl_value(value)
            if sym is not None:
                out[f"{key}.$"] = sym
            else:
                out[key] = asl_parameters(value, f"{where}.{key}")
        return out
    if isinstance(body, (list, tuple)):
        for i, v in enumerate(body):
            if asl_value(v) is not None:
                raise ConfigError("a placeholder directly inside a list cannot be expressed "
                                  "in Step Functions Parameters", field=f"{where}[{i}]",
                                  expected="a constant, or the placeholder as a field of an "
                                  "object in the list")
        return [asl_parameters(v, f"{where}[{i}]") for i, v in enumerate(body)]
    if isinstance(body, Placeholder):
        raise ConfigError("a placeholder at the top of Parameters", field=where,
                          expected="an object of fields")
    return body


def with_examples(body: Any, document: dict[str, Any]) -> Any:
    """Resolve what ``document`` knows, keep the other placeholders (plans, docs)."""
    if isinstance(body, Placeholder):
        try:
            return lookup(document, body.path)
        except (KeyError, ValueError):
            return body
    if isinstance(body, str):
        def sub(m: re.Match) -> str:
            try:
                return _text(lookup(document, m.group(1)))
            except (KeyError, ValueError):
                return m.group(0)
        return _TOKEN.sub(sub, body)
    if isinstance(body, dict):
        return {k: with_examples(v, document) for k, v in body.items()}
    if isinstance(body, (list, tuple)):
        return [with_examples(v, document) for v in body]
    return body


def readable(body: Any) -> Any:
    """Placeholders written as ``{$.Path}`` for people (plans, graphs)."""
    if isinstance(body, Placeholder):
        return "{" + body.path + "}"
    if isinstance(body, str):
        return _TOKEN.sub(lambda m: "{" + m.group(1) + "}", body)
    if isinstance(body, dict):
        return {k: readable(v) for k, v in body.items()}
    if isinstance(body, (list, tuple)):
        return [readable(v) for v in body]
    return body
