"""A compatibility layer for AWS Glue's ``awsglue`` classes over local PySpark.

The real ``awsglue`` package (pip ``awsgluedataplanepython``) is only a Python face of
Glue's JVM library, which is not published; ``GlueContext(sc)`` therefore fails on plain
Spark. While ``installed(spark)`` is active, ``awsglue.context``, ``awsglue.job``,
``awsglue.dynamicframe`` and ``awsglue.transforms`` are this package's pure-Python modules
(DataFrames underneath); ``awsglue.utils`` (getResolvedOptions) stays the real one. What
the layer does not cover fails at once with a message naming the call and pointing to the
Glue container (``etl.runner: glue-container``).
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import logging
import os
import sys
import types
from typing import TYPE_CHECKING, Iterator

from local_runners.glue_compat import runtime
from local_runners.glue_compat.runtime import CATALOG_ENV, Resolver, Runtime, default_resolver
from local_runners.glue_compat.unsupported import GlueCompatError, GlueCompatUnsupported

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["CATALOG_ENV", "GlueCompatError", "GlueCompatUnsupported", "Resolver", "Runtime",
           "default_resolver", "installed", "uses_glue_api", "SHIMMED"]

# awsglue submodule -> the module of this package that stands in for it
SHIMMED = {"context": "context", "job": "job", "dynamicframe": "dynamicframe",
           "transforms": "transforms"}
_MISSING = object()


def _imports_glue_api(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        parts = node.module.split(".")
        if parts[0] == "awsglue":
            if len(parts) > 1:
                return parts[1] in SHIMMED
            return any(a.name in (*SHIMMED, "DynamicFrame", "*") for a in node.names)
    elif isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "awsglue" and len(a.name.split(".")) > 1
                   and a.name.split(".")[1] in SHIMMED for a in node.names)
    return False


def _guards_import_error(node: ast.Try) -> bool:
    """A ``try`` with an ``except ImportError`` (or ModuleNotFoundError): its imports are
    optional (the script runs without them)."""
    names: list[str] = []
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names += [k.id for k in kinds if isinstance(k, ast.Name)]
    return any(n in ("ImportError", "ModuleNotFoundError") for n in names)


def _uses(node: ast.AST) -> bool:
    if _imports_glue_api(node):
        return True
    if isinstance(node, ast.Try) and _guards_import_error(node):
        children = [*node.handlers, *node.orelse, *node.finalbody]  # the body is optional
    else:
        children = list(ast.iter_child_nodes(node))
    return any(_uses(child) for child in children)


def uses_glue_api(source: str) -> bool:
    """True when the script imports from awsglue.context, .job, .dynamicframe or
    .transforms (``from awsglue.context import GlueContext``, ``import awsglue.job``,
    ``from awsglue import DynamicFrame``...), anywhere but in the body of a ``try`` that
    catches ImportError (an optional import: the script runs without it, as
    glue_etl/mnist_etl.py does locally). A script that does not parse: False."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return _uses(tree)


def _awsglue_package() -> types.ModuleType:
    """The real ``awsglue`` package (for awsglue.utils); a bare package when it is not
    installed."""
    try:
        return importlib.import_module("awsglue")
    except ImportError:
        pkg = types.ModuleType("awsglue")
        pkg.__path__ = []  # a package: its shimmed submodules come from sys.modules
        return pkg


@contextlib.contextmanager
def installed(spark: "SparkSession", resolver: Resolver | None = None, *,
              log: logging.Logger | None = None,
              catalog: str | os.PathLike | None = None) -> Iterator[Runtime]:
    """While the block runs, ``awsglue.{context,job,dynamicframe,transforms}`` are the
    layer's modules (in ``sys.modules`` and as attributes of the ``awsglue`` package);
    afterwards, also on error or KeyboardInterrupt, the previous entries are back.

    ``resolver`` maps the paths a script reads and writes (default: plain paths and
    file:// URIs; s3:// fails, naming the path); ``catalog``: the local catalog file
    (default: the ``MLHARNESS_GLUE_CATALOG`` environment variable)."""
    rt = Runtime(spark=spark, resolver=resolver or default_resolver,
                 log=log or logging.getLogger("awsglue.compat"), catalog=catalog)
    pkg = _awsglue_package()
    shims = {name: importlib.import_module(f"{__name__}.{mod}")
             for name, mod in SHIMMED.items()}
    saved_modules = {name: sys.modules.get(name, _MISSING)
                     for name in ["awsglue", *(f"awsglue.{n}" for n in shims)]}
    attrs = [*shims, "DynamicFrame"]
    saved_attrs = {name: getattr(pkg, name, _MISSING) for name in attrs}
    previous = runtime.swap(rt)
    try:
        sys.modules["awsglue"] = pkg
        for name, module in shims.items():
            sys.modules[f"awsglue.{name}"] = module
            setattr(pkg, name, module)
        pkg.DynamicFrame = shims["dynamicframe"].DynamicFrame
        yield rt
    finally:
        runtime.swap(previous)
        for name, value in saved_modules.items():
            if value is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
        for name, value in saved_attrs.items():
            if value is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(pkg, name)
            else:
                setattr(pkg, name, value)
