"""The openpi wire format (msgpack with numpy arrays), decoded as a hostile peer may send it.

openpi's own decoder builds `np.ndarray(buffer=data, dtype=dtype)` from whatever the
frame says: an object dtype over attacker bytes is a pointer dereference (a crash), and a
huge list of small ints is decoded whole. Here every frame is bounded before anything is
built:
- the frame's size (the caller's limit, checked before decoding);
- every list and map (`max_items` entries), every string (`max_string_bytes`), nesting
  (`max_depth`) and the number of nodes in all (`max_nodes`);
- every array: a numeric dtype (bool, int, uint, float), at most `max_ndim` dimensions,
  and data exactly `prod(shape) * itemsize` bytes; it is copied out of the frame, so
  nothing keeps the receive buffer alive.
A refused frame is a WireError whose message is one bounded line.

May import: numpy and msgpack only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a model input can be
ECHO_CHARS = 120  # at most this much of anything a peer sent is repeated back or logged


class WireError(ValueError):
    """A frame refused: its message is one line, naming what was wrong."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one decoded frame may hold."""

    max_frame_bytes: int
    max_items: int = 4096  # entries in one list or map
    max_string_bytes: int = 4096
    max_depth: int = 8  # maps and lists inside each other (an array counts as a leaf)
    max_nodes: int = 65536  # every value in the frame, arrays counted once
    max_ndim: int = 8


def bounded(text: Any, limit: int = ECHO_CHARS) -> str:
    """`text` as one line of at most `limit` characters, for an error frame or a log."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def check_dtype(spelled: Any, where: str = "array") -> np.dtype:
    """A numeric numpy dtype from its wire spelling, refused before numpy builds anything
    of it (object, string, void, structured and datetime dtypes are refused)."""
    if isinstance(spelled, bytes):
        spelled = spelled.decode("ascii", "replace")
    if not isinstance(spelled, str) or not 1 <= len(spelled) <= 8:
        raise WireError(f"{where}: dtype must be a short numpy spelling such as '<f4'")
    try:
        dtype = np.dtype(spelled)
    except TypeError:
        raise WireError(f"{where}: dtype '{bounded(spelled, 16)}' is not a numpy dtype") from None
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError(
            f"{where}: dtype '{bounded(spelled, 16)}' is not numeric; bool, int, uint or float only"
        )
    return dtype


def _array(obj: dict, limits: Limits) -> np.ndarray:
    dtype = check_dtype(obj.get(b"dtype"))
    shape, data = obj.get(b"shape"), obj.get(b"data")
    if (
        not isinstance(shape, list | tuple)
        or len(shape) > limits.max_ndim
        or not all(type(n) is int and 0 <= n <= 2**31 for n in shape)
    ):
        raise WireError(f"array: shape must be up to {limits.max_ndim} non-negative sizes")
    if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
        raise WireError("array: its data is not shape x itemsize bytes")
    # a copy: the array owns its memory (no view into the frame), and may be written
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _scalar(obj: dict) -> Any:
    dtype = check_dtype(obj.get(b"dtype"), "scalar")
    value = obj.get(b"data")
    if type(value) not in (bool, int, float):
        raise WireError("scalar: its data must be a number")
    try:
        return dtype.type(value)
    except (OverflowError, ValueError):
        raise WireError(f"scalar: {bounded(value, 24)} does not fit {dtype}") from None


def _hook(limits: Limits):
    def hook(obj: dict) -> Any:
        if b"__ndarray__" in obj:
            return _array(obj, limits)
        if b"__npgeneric__" in obj:
            return _scalar(obj)
        return obj

    return hook


def _walk(value: Any, limits: Limits) -> None:
    """Nesting and node count, checked on the decoded value (msgpack bounds each container
    and string, and refuses nesting past its own stack, but not these)."""
    nodes = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise WireError(f"more than {limits.max_nodes:,} values in one frame")
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limits.max_depth:
            raise WireError(f"nested deeper than {limits.max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def decode(frame: Any, limits: Limits) -> Any:
    """One msgpack-numpy frame, decoded within `limits`, or a WireError."""
    if isinstance(frame, str):
        raise WireError("expected a binary msgpack frame, got text")
    if len(frame) > limits.max_frame_bytes:
        raise WireError(f"the frame is {len(frame):,} bytes; at most {limits.max_frame_bytes:,}")
    try:
        value = msgpack.unpackb(
            frame,
            object_hook=_hook(limits),
            raw=False,
            use_list=True,
            strict_map_key=False,
            max_str_len=limits.max_string_bytes,
            max_bin_len=limits.max_frame_bytes,
            max_array_len=limits.max_items,
            max_map_len=limits.max_items,
            max_ext_len=0,
        )
    except WireError:
        raise
    except msgpack.exceptions.StackError:
        raise WireError("nested too deeply") from None
    except Exception as exc:  # any malformed frame: its kind, never its bytes
        raise WireError(f"not msgpack ({type(exc).__name__}: {bounded(exc, 60)})") from None
    _walk(value, limits)
    return value


def json_safe(value: Any, limits: Limits = Limits(max_frame_bytes=0), depth: int = 0) -> Any:
    """A decoded value as JSON-safe data (bytes become a short description, arrays their
    shape and dtype, strings bounded), for a summary that must always be writable."""
    if depth > limits.max_depth:
        return "…"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return bounded(value, limits.max_string_bytes)
    if isinstance(value, bytes):
        return f"<{len(value):,} bytes>"
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return json_safe(value.item(), limits, depth)
    if isinstance(value, dict):
        return {
            bounded(k if not isinstance(k, bytes) else k.decode("utf-8", "replace"), 60): json_safe(
                v, limits, depth + 1
            )
            for k, v in list(value.items())[:100]
        }
    if isinstance(value, list | tuple):
        return [json_safe(v, limits, depth + 1) for v in value[:100]]
    return bounded(type(value).__name__, 40)
