"""The range of input values a model declares, and the check of requests against it.

A SavedModel says nothing about the values its float inputs expect: the project's network
takes pixels in [0, 1] and answers 1e30 or -1e9 with a confident (meaningless) class. So
the export declares it next to the model, where TF Serving keeps serving-side extras
(``<version>/assets.extra/``, which TF Serving and the SageMaker container ignore apart from
warm-up files)::

    <version>/assets.extra/input_ranges.json   {"pixels": [0.0, 1.0]}

one ``[min, max]`` (inclusive, finite) per input name. ``read_input_ranges`` reads it when a
version loads: no file means no declared range (no check); a malformed file, or one naming
an input the model does not have, fails the load with ``HarnessError``.
``out_of_range(arrays, ranges)`` returns what is wrong with a request (the input, the
offending value and where it is, and the declared range), or None. NaN and infinities are
rejected for every float input whether or not a range is declared
(``local_runners.serve_codec``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from harness.errors import HarnessError

RANGES_FILE = Path("assets.extra") / "input_ranges.json"

Ranges = Mapping[str, tuple[float, float]]


def write_input_ranges(version_dir: str | Path, ranges: Ranges) -> Path:
    """Declare ``{input name: (min, max)}`` for the version at ``version_dir``."""
    path = Path(version_dir) / RANGES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: [float(lo), float(hi)] for k, (lo, hi) in ranges.items()})
                    + "\n")
    return path


def read_input_ranges(version_dir: str | Path, input_names: Iterable[str]
                      ) -> dict[str, tuple[float, float]]:
    """The ranges declared for the version at ``version_dir`` ({} when none are)."""
    path = Path(version_dir) / RANGES_FILE
    if not path.is_file():
        return {}
    expected = ('a JSON object mapping input names to [min, max] with finite min <= max, '
                'e.g. {"pixels": [0.0, 1.0]}')
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HarnessError(f"cannot read the declared input ranges ({e})", file=str(path),
                           expected=expected) from None
    if not isinstance(doc, dict):
        raise HarnessError("the declared input ranges are not an object", file=str(path),
                           expected=expected, got=doc)
    names = set(input_names)
    ranges = {}
    for name, bounds in doc.items():
        if name not in names:
            raise HarnessError(f"a range is declared for input '{name}', which the model does "
                               "not have", file=str(path), expected=f"inputs among {sorted(names)}")
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                           and math.isfinite(b) for b in bounds)
                or bounds[0] > bounds[1]):
            raise HarnessError(f"the range of input '{name}' is not [min, max]", file=str(path),
                               expected=expected, got=bounds)
        ranges[name] = (float(bounds[0]), float(bounds[1]))
    return ranges


def out_of_range(arrays: Mapping[str, np.ndarray], ranges: Ranges) -> str | None:
    """What is outside the declared ranges in ``arrays`` (None: everything is inside)."""
    for name, (lo, hi) in ranges.items():
        arr = arrays.get(name)
        if arr is None or not arr.size or arr.dtype.kind not in "iuf":
            continue
        if arr.min() >= lo and arr.max() <= hi:   # also False for NaN: reported below
            continue
        bad = ~((arr >= lo) & (arr <= hi))
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        value = arr[where]
        return (f"input '{name}' holds {value:.6g} at {list(where)}; the model expects values "
                f"in [{lo:g}, {hi:g}] (declared in {RANGES_FILE.as_posix()}); "
                f"{int(bad.sum())} value(s) are outside it")
    return None
