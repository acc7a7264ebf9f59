"""The careful openpi client that `observe` drives: openpi-client's WebsocketClientPolicy
(its packing and protocol) with the server treated as a hostile peer. A frame size limit
on every connection, `timeout_s` on the handshake and the metadata frame, every frame
decoded by sim.real.wire (never openpi's decoder, which builds any dtype it is told), and
answers checked against the declared action shape and finiteness.

May import: errors, real.wire (and openpi-client, websockets on first use).
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from typing import Any

import numpy as np

from sim.errors import InputError, first_line
from sim.real.wire import Limits, WireError, bounded, decode

CONNECT_TIMEOUT_S = 30.0
# what one frame from the server (metadata or answer) may be: a chunk of actions and a
# little timing, so far less than this; anything bigger is refused before it is read
SERVER_FRAME = Limits(max_frame_bytes=16 * 2**20)


@functools.cache  # one class, built on first use (openpi-client is imported then)
def careful_policy_class() -> type:
    """openpi-client's WebsocketClientPolicy (its packing, its protocol), with the server
    treated as a hostile peer: a frame size limit on the connection, `timeout_s` on the
    handshake and the metadata frame, and every frame decoded by sim.real.wire (numeric
    dtypes only, bounded structure), never by openpi's decoder."""
    import websockets.sync.client
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from websockets.exceptions import ConnectionClosed

    class CarefulPolicy(WebsocketClientPolicy):
        def __init__(self, target: str, timeout_s: float) -> None:
            self._timeout_s = timeout_s
            super().__init__(target)

        def _wait_for_server(self):
            conn = websockets.sync.client.connect(
                self._uri,
                compression=None,
                max_size=SERVER_FRAME.max_frame_bytes,
                open_timeout=self._timeout_s,
                close_timeout=1,
            )
            try:
                frame = conn.recv(timeout=self._timeout_s)
            except TimeoutError:
                conn.close()
                raise TimeoutError("no metadata frame") from None
            except ConnectionClosed as exc:
                if too_big(exc):
                    raise MetadataError(f"refused (over {LIMIT_TEXT})") from None
                raise
            try:
                return conn, decode(frame, SERVER_FRAME)
            except WireError as exc:
                conn.close()
                raise MetadataError(str(exc)) from None

        def infer(self, obs: dict) -> dict:
            self._ws.send(self._packer.pack(obs))
            try:
                response = self._ws.recv()
            except ConnectionClosed as exc:
                if too_big(exc):  # the connection is gone: a problem, then a reconnect
                    raise ConnectionError(f"the answer frame is over {LIMIT_TEXT}") from None
                raise
            if isinstance(response, str):  # the protocol's error frame
                raise RuntimeError(f"the server refused: {bounded(response)}")
            try:
                return decode(response, SERVER_FRAME)
            except WireError as exc:
                raise BadAnswer(f"the answer frame is refused ({exc})") from None

    return CarefulPolicy


LIMIT_TEXT = f"the {SERVER_FRAME.max_frame_bytes:,}-byte frame limit; closed with 1009"


def too_big(closed: Any) -> bool:
    """Whether a connection was closed by us for a frame past the limit (1009)."""
    return closed.sent is not None and closed.sent.code == 1009


class MetadataError(ValueError):
    """The server's metadata frame was refused (not msgpack, or past the limits)."""


class BadAnswer(ValueError):
    """An answer that arrived but cannot be used: counted as a bad answer, not served."""


def connect(target: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """One careful openpi-client connection, its metadata frame read, within `timeout_s`;
    a refused, broken, silent or malformed server is one line."""
    policy_class = careful_policy_class()
    box: dict[str, Any] = {}

    def attempt() -> None:
        try:
            box["policy"] = policy_class(target, timeout_s)
        except BaseException as exc:  # noqa: BLE001 - reported as one line below
            box["error"] = exc

    thread = threading.Thread(target=attempt, daemon=True)  # a silent server may never answer
    thread.start()
    thread.join(timeout_s + 1.0)  # the connection's own timeouts end it first
    if "policy" in box:
        return box["policy"]
    exc = box.get("error")
    if exc is None or isinstance(exc, TimeoutError):
        raise InputError(
            f"no metadata frame came within {timeout_s:g} s (is it an openpi policy server?)",
            option="target",
            given=target,
        )
    if isinstance(exc, MetadataError):
        text = str(exc)
        if text.startswith(("not msgpack", "refused")):
            reason = f"the metadata frame is {text}"
        else:
            reason = f"the metadata frame is refused ({text})"
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connection refused (is the server running?)"
    else:
        reason = f"cannot connect ({type(exc).__name__}: {bounded(first_line(exc))})"
    raise InputError(reason, option="target", given=target)


def drop(policy: Any) -> None:
    """Break a connection at once (a request past its timeout, the end of a run): the
    blocked infer() in its thread raises."""
    with contextlib.suppress(OSError):
        policy._ws.socket.shutdown(socket.SHUT_RDWR)


def action_shape_of(metadata: Any) -> tuple[int, ...] | None:
    """The server's declared `action_shape`, when it declares a sensible one."""
    shape = metadata.get("action_shape") if isinstance(metadata, dict) else None
    sensible = isinstance(shape, list | tuple) and 1 <= len(shape) <= 8
    if sensible and all(type(n) is int and 0 < n <= 2**20 for n in shape):
        return tuple(shape)
    return None


def check_answer(answer: Any, action_shape: tuple[int, ...] | None = None) -> dict | None:
    """The answer's server_timing (or None); an answer without a finite actions array (of
    the declared shape, when the server declared one) is a BadAnswer."""
    actions = answer.get("actions") if isinstance(answer, dict) else None
    if not isinstance(actions, np.ndarray):
        raise BadAnswer("the answer has no actions array")
    if action_shape is not None and actions.shape != action_shape:
        raise BadAnswer(f"actions of shape {actions.shape}; the server declared {action_shape}")
    if actions.dtype.kind == "f" and not np.isfinite(actions).all():
        raise BadAnswer("the actions are not all finite")
    timing = answer.get("server_timing")
    return dict(timing) if isinstance(timing, dict) else None
