"""The SavedModel behind the embedded model server: loading a version and calling its signatures.

``LoadedModel(model_dir)`` loads the newest numeric ``<version>/`` of a TF Serving layout
(``LoadedModel(model_dir, version)`` a given one) with ``tf.saved_model.load``, requires a
``serving_default`` signature and warms it up with one zero instance; a model that cannot be
loaded raises ``HarnessError``. Each ``Signature`` knows its inputs and outputs
(``TensorInfo``: dtype and shape, described as TF Serving's metadata does) and is called with
named numpy arrays, returning named numpy arrays; ``LoadedModel.signature(name)`` picks one
(an unknown name is a 400 ``RequestError``); ``version_stamp`` tells when the files of a
version change (a version that failed to load is retried then). ``input_ranges`` holds the
value ranges the version declares for its inputs (``local_runners.serve_input_range``; {}
when it declares none). TensorFlow is imported on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.archives import newest_model_version
from harness.errors import HarnessError
from local_runners.serve_codec import RequestError
from local_runners.serve_input_range import read_input_ranges


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: np.dtype
    tf_dtype: str          # e.g. "DT_FLOAT", as TF Serving's metadata spells it
    shape: tuple           # None for an unknown dimension

    def shape_text(self) -> str:
        return "[" + ", ".join("N" if i == 0 and d is None else ("?" if d is None else str(d))
                               for i, d in enumerate(self.shape)) + "]"

    def describe(self) -> dict[str, Any]:
        return {"dtype": self.tf_dtype, "name": self.name,
                "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""}
                                         for d in self.shape], "unknown_rank": False}}


def _tensor_info(name: str, spec) -> TensorInfo:
    from tensorflow.core.framework import types_pb2
    return TensorInfo(name=name, dtype=np.dtype(spec.dtype.as_numpy_dtype),
                      tf_dtype=types_pb2.DataType.Name(spec.dtype.as_datatype_enum),
                      shape=tuple(spec.shape.as_list()))


class Signature:
    """One serving signature: its named inputs and outputs and the function to call."""

    def __init__(self, name: str, fn):
        self.name = name
        self.fn = fn
        _, kwargs = fn.structured_input_signature
        self.inputs = {k: _tensor_info(k, v) for k, v in sorted(kwargs.items())}
        self.outputs = {k: _tensor_info(k, v) for k, v in sorted(fn.structured_outputs.items())}

    def __call__(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf
        result = self.fn(**{k: tf.constant(v) for k, v in arrays.items()})
        return {k: v.numpy() for k, v in result.items()}

    def describe(self) -> dict[str, Any]:
        return {"inputs": {k: v.describe() for k, v in self.inputs.items()},
                "outputs": {k: v.describe() for k, v in self.outputs.items()},
                "method_name": "tensorflow/serving/predict"}


class LoadedModel:
    """A SavedModel version loaded with tf.saved_model.load and warmed up."""

    def __init__(self, model_dir: Path, version: int | None = None):
        import tensorflow as tf
        if version is None:
            self.version, self.path = newest_model_version(model_dir)
        else:
            self.version, self.path = version, Path(model_dir) / str(version)
        try:
            loaded = tf.saved_model.load(str(self.path))
        except Exception as e:  # TF raises many types for a corrupt model
            raise HarnessError(f"cannot load the SavedModel ({type(e).__name__}: {e})",
                               file=str(self.path)) from None
        self._loaded = loaded  # keep the object graph alive
        self.signatures = {name: Signature(name, fn) for name, fn in loaded.signatures.items()}
        if "serving_default" not in self.signatures:
            raise HarnessError("the SavedModel has no 'serving_default' signature",
                               file=str(self.path),
                               expected="signatures={'serving_default': fn} at export",
                               got=sorted(self.signatures))
        self.input_ranges = read_input_ranges(
            self.path, {name for sig in self.signatures.values() for name in sig.inputs})
        self._warm_up()

    def _warm_up(self) -> None:
        sig = self.signatures["serving_default"]
        arrays = {k: np.zeros([1] + [1 if d is None else d for d in t.shape[1:]], t.dtype)
                  for k, t in sig.inputs.items()}
        sig(arrays)

    def signature(self, name: Any) -> Signature:
        name = name or "serving_default"
        if not isinstance(name, str):
            raise RequestError(400, f'"signature_name" must be a string, got {name!r}')
        if name not in self.signatures:
            raise RequestError(400, f"serving signature name '{name}' not found; expected one "
                               f"of {sorted(self.signatures)}")
        return self.signatures[name]


def version_stamp(path: Path) -> tuple:
    """Changes when any file under ``path`` is written (to retry a half-copied version)."""
    files = [p.stat() for p in Path(path).rglob("*") if p.is_file()]
    return len(files), sum(st.st_size for st in files), max((st.st_mtime_ns for st in files),
                                                            default=0)
