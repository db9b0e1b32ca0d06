"""What the compatibility layer does not cover fails at once, naming the call.

Every shim class and module answers an unknown attribute with ``GlueCompatUnsupported``
(not AttributeError), whose message names the call and points to the container runner.
Dunder and private names still raise AttributeError, so ``copy``, ``pickle``, ``hasattr``
probes and the like keep working.
"""
from __future__ import annotations

from typing import Any, NoReturn

CONTAINER_WAY = ("run it in AWS's Glue container instead: set etl.runner: glue-container "
                 "(image public.ecr.aws/glue/aws-glue-libs, needs Docker)")


class GlueCompatError(Exception):
    """A call the layer covers was used in a way it cannot honour locally (a bad format,
    an existing output, an s3:// path without a resolver, ...)."""


class GlueCompatUnsupported(GlueCompatError, NotImplementedError):
    """A Glue API the local compatibility layer does not provide."""


def unsupported(call: str, detail: str = "") -> NoReturn:
    """Raise the error for ``call`` (e.g. ``GlueContext.create_dynamic_frame.from_rdd``)."""
    extra = f" ({detail})" if detail else ""
    raise GlueCompatUnsupported(
        f"awsglue compat: {call} is not supported locally{extra}; {CONTAINER_WAY}")


def _private(name: str) -> bool:
    return name.startswith("_")


class _UnsupportedMeta(type):
    """Class-level lookups too: ``DynamicFrame.fromRDD`` names the missing call."""

    def __getattr__(cls, name: str) -> Any:
        if _private(name):
            raise AttributeError(name)
        unsupported(f"{cls._glue_name}.{name}")


class Unsupported(metaclass=_UnsupportedMeta):
    """Mixin: an unknown attribute of an instance (or the class) is a
    GlueCompatUnsupported error naming ``<_glue_name>.<attribute>``."""

    _glue_name = "awsglue"

    def __getattr__(self, name: str) -> Any:
        if _private(name):
            raise AttributeError(name)
        unsupported(f"{type(self)._glue_name}.{name}")


def module_getattr(module_name: str):
    """A module-level ``__getattr__`` for a shim module registered as ``module_name``."""

    def __getattr__(name: str) -> Any:
        if _private(name):
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        unsupported(f"{module_name}.{name}")

    return __getattr__
