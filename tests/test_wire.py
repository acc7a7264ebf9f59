"""sim.real.wire and serve's admission checks, without a network: every frame a hostile
peer can send is refused with one bounded line, never a crash; good frames round-trip."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.real.wire import Limits, WireError, decode, json_safe

pytest.importorskip("openpi_client")
from openpi_client import msgpack_numpy  # noqa: E402

LIMITS = Limits(max_frame_bytes=2**20)


def array_frame(dtype: str, data: bytes, shape) -> bytes:
    raw = {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}
    return msgpack.packb({"state": [raw]})


def test_an_object_array_of_attacker_bytes_is_refused_before_numpy_builds_it():
    # openpi's own decoder builds this array and dereferences the bytes as pointers
    frame = array_frame("|O", b"\x41" * 64, [8])
    with pytest.raises(WireError, match="not numeric"):
        decode(frame, LIMITS)


@pytest.mark.parametrize("dtype", ["<U4", "|S8", "|V8", "<M8[s]", "<c8", "f4,f4"])
def test_non_numeric_dtypes_are_refused(dtype):
    with pytest.raises(WireError):
        decode(array_frame(dtype, b"\0" * 16, [1]), LIMITS)


def test_a_huge_dtype_string_is_not_echoed_back():
    frame = array_frame("<f4" + "x" * 100_000, b"\0" * 4, [1])
    with pytest.raises(WireError) as caught:
        decode(frame, Limits(max_frame_bytes=2**20, max_string_bytes=2**20))
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    "frame, words",
    [
        (array_frame("<f4", b"\0" * 12, [4]), "shape x itemsize"),  # data shorter than shape
        (array_frame("<f4", b"\0" * 4, [-1]), "shape"),
        (array_frame("<f4", b"\0" * 4, [1] * 9), "shape"),
        (msgpack.packb(list(range(5000))), "not msgpack"),  # past max_items
        (msgpack.packb("x" * 5000), "not msgpack"),  # past max_string_bytes
        (b"\x91" * 2000 + b"\x90", "nested"),  # msgpack's own stack
        (msgpack.packb([[[[[[[[[[1]]]]]]]]]]), "nested deeper"),
        (b"\xc1garbage", "not msgpack"),
        (b"\x00" * (2**20 + 1), "at most"),
    ],
)
def test_malformed_and_oversize_frames_are_one_line(frame, words):
    with pytest.raises(WireError, match=words) as caught:
        decode(frame, LIMITS)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_too_many_values_in_all_is_refused():
    frame = msgpack.packb([[0] * 4000 for _ in range(20)])
    with pytest.raises(WireError, match="values in one frame"):
        decode(frame, Limits(max_frame_bytes=2**20, max_nodes=10_000))


def test_decoded_arrays_own_their_memory():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = decode(msgpack_numpy.packb({"x": x}), LIMITS)["x"]
    assert got.flags.owndata and got.flags.writeable
    np.testing.assert_array_equal(got, x)


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(["<f4", "<f8", "<i8", "<i4", "|u1", "|b1", ">f4", "<f2"]),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=4),
    seed=st.integers(0, 2**31),
)
def test_numeric_arrays_round_trip_as_openpi_sends_them(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(shape) * 100).astype(dtype)
    got = decode(msgpack_numpy.packb({"obs": {"x": x, "s": np.float32(2.5)}}), LIMITS)
    np.testing.assert_array_equal(got["obs"]["x"], x)
    assert got["obs"]["x"].dtype == x.dtype and got["obs"]["s"] == np.float32(2.5)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_the_decoder(frame):
    try:
        decode(frame, LIMITS)
    except WireError as exc:
        assert "\n" not in str(exc)


def test_metadata_becomes_json_safe_text():
    import json

    meta = {b"raw": b"\xff" * 10, "arr": np.zeros((2, 3)), "f": float("inf"), "n": [1, {"k": b""}]}
    text = json.dumps(json_safe(meta))
    assert "<10 bytes>" in text and "inf" in text


# ---- serve's admission checks (ModelRunner.check), with no model behind them ----------------
def runner():
    from sim.real.runner import ModelRunner

    spec = {"instruction": ((4,), "int64"), "state": ((3,), "float32")}
    return ModelRunner(None, spec, (5, 2), "cpu", None, ranges={"instruction": (0, 256)})


def good():
    return {"instruction": np.arange(4, dtype=np.int64), "state": np.zeros(3, np.float32)}


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("instruction", np.array([0, 1, 2, 10**6]), "from 0 to 255"),
        ("instruction", np.array([0, 1, 2, -1]), "from 0 to 255"),
        ("instruction", np.array([0, 1, 2, 2**63 - 1]), "from 0 to 255"),
        ("instruction", np.array([0, 1, 2, 1e18]), "integers"),
        ("state", np.array([0, 0, 1e300]), "finite"),
        ("state", np.array([0, 0, np.nan], np.float32), "finite"),
        ("state", np.zeros(4, np.float32), "shape"),
        ("state", [1, "a", 2], "numbers"),
        ("state", [[1], [1, 2]], "rectangular"),
        ("state", {"x": 1}, "array"),
    ],
)
def test_everything_a_model_could_fail_on_is_refused_at_admission(key, value, words):
    obs = {**good(), key: value}
    with pytest.raises(ValueError, match=words):
        runner().check(obs)


def test_a_good_observation_is_copied_into_the_spec_dtypes():
    obs = good()
    out = runner().check(obs)
    assert out["instruction"].dtype == np.int64 and out["state"].dtype == np.float32
    assert out["state"] is not obs["state"]
