"""What a JSON body holds at its structural level, measured on its bytes before parsing.

``scan_json(body)`` returns how deeply arrays and objects nest and whether the literals
``true``/``false`` occur (outside strings), with no recursion and no per-byte Python loop,
so a hostile body (``[[[[...`` two thousand deep, or megabytes of escaped quotes) costs a
few passes in C:

1. escaped backslashes, then escaped quotes are removed (``\\\\`` pairs, then ``\\"``: what
   remains of a run of backslashes is at most one, and it escapes the quote after it exactly
   when the run was odd);
2. every byte but ``[]{}"tf`` is deleted (``bytes.translate``: the 1.6 MB body of 100
   images shrinks to a few hundred bytes in about 0.4 ms, faster than two ``in`` searches);
3. what is left is counted: a bracket or letter is inside a string when an odd number of
   quotes precede it; outside strings ``t`` and ``f`` only begin ``true`` and ``false``.

Strings are delimited exactly as a JSON parser delimits them, so every bracket counted is
one the parser would descend into; for a malformed body the counts may be off, but the
parser rejects that body anyway. ``local_runners.serve_codec.check_json_depth`` turns a
body over the depth limit into a 400 (the literals tell it whether numpy may have turned
booleans into numbers).
"""
from __future__ import annotations

import numpy as np

_NOT_KEPT = bytes(c for c in range(256) if c not in b'[]{}"tf')
_QUOTE, _T, _F = ord('"'), ord("t"), ord("f")
_DELTA = np.zeros(256, np.int8)
_DELTA[[ord("["), ord("{")]] = 1
_DELTA[[ord("]"), ord("}")]] = -1
_OPENING = frozenset(b"[{")
_SMALL = 512        # skeletons up to this size are counted by a plain loop (no numpy setup)


def scan_json(body: bytes | bytearray) -> tuple[int, bool]:
    """(deepest nesting of arrays/objects, whether true/false literals occur) in ``body``."""
    body = bytes(body)
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = body.translate(None, _NOT_KEPT)
    return _count_small(skeleton) if len(skeleton) <= _SMALL else _count_large(skeleton)


def _count_small(skeleton: bytes) -> tuple[int, bool]:
    depth = deepest = 0
    in_string = literals = False
    for c in skeleton:
        if c == _QUOTE:
            in_string = not in_string
        elif in_string:
            continue
        elif c == _T or c == _F:
            literals = True
        elif c in _OPENING:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest, literals


def _count_large(skeleton: bytes) -> tuple[int, bool]:
    a = np.frombuffer(skeleton, np.uint8)
    is_quote = a == _QUOTE
    others = np.flatnonzero(~is_quote)
    if is_quote.any():
        quotes = np.flatnonzero(is_quote)
        others = others[np.searchsorted(quotes, others) % 2 == 0]       # outside strings
    kinds = a[others]
    is_letter = (kinds == _T) | (kinds == _F)
    steps = _DELTA[kinds[~is_letter]]
    deepest = int(np.cumsum(steps, dtype=np.int64).max(initial=0)) if steps.size else 0
    return deepest, bool(is_letter.any())
