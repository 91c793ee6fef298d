"""Forward protocol frames and handshake, decoded from hand-built msgpack (no sockets)."""
from __future__ import annotations

import gzip
import hashlib
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.errors import BodyTooLarge, BusError, InvalidBody, InvalidTag
from bus.ingress.frames import (
    COMPRESSED,
    FORWARD,
    MESSAGE,
    PACKED,
    EventTime,
    FrameReader,
    Handshake,
    decode_frame,
    gunzip,
)

LIMIT = 64 * 1024


def event_time(seconds: int, nanos: int = 0) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", seconds, nanos))


def packed(*entries: list) -> bytes:
    return b"".join(msgpack.packb(e) for e in entries)


def frames_of(data: bytes, limit: int = LIMIT) -> list:
    """Everything a connection sending `data` would have accepted, decoded."""
    return [decode_frame(obj, limit) for obj in FrameReader(limit).feed(data)]


def test_message_mode_with_integer_time_and_chunk():
    (frame,) = frames_of(msgpack.packb(["api.orders", 1700000000, {"order": 1}, {"chunk": "c1"}]))
    assert (frame.tag, frame.records, frame.chunk, frame.mode) == ("api.orders", [{"order": 1}], "c1", MESSAGE)


def test_message_mode_with_event_time_and_no_option():
    (frame,) = frames_of(msgpack.packb(["api.orders", event_time(1700000000, 5), {"a": "b"}]))
    assert frame.records == [{"a": "b"}] and frame.chunk is None


def test_forward_mode_batch():
    (frame,) = frames_of(msgpack.packb(["api.x", [[1, {"n": 1}], [event_time(2), {"n": 2}]], {"size": 2, "chunk": "k"}]))
    assert frame.mode == FORWARD and frame.records == [{"n": 1}, {"n": 2}] and frame.chunk == "k"


def test_packed_forward_as_bin_and_as_legacy_str():
    stream = packed([1, {"n": 1}], [2, {"n": 2}])
    (frame,) = frames_of(msgpack.packb(["api.x", stream, {"size": 2}], use_bin_type=True))
    assert frame.mode == PACKED and frame.records == [{"n": 1}, {"n": 2}]
    # msgpack before the bin type (Fluentd v0.12) sends the stream as a raw str.
    (legacy,) = frames_of(msgpack.packb(["api.x", stream], use_bin_type=False))
    assert legacy.records == [{"n": 1}, {"n": 2}]


def test_compressed_packed_forward_with_several_gzip_members():
    # out_forward appends one gzip member per write to a chunk.
    data = gzip.compress(packed([1, {"n": 1}])) + gzip.compress(packed([2, {"n": 2}], [3, {"n": 3}]))
    (frame,) = frames_of(msgpack.packb(["api.x", data, {"compressed": "gzip", "size": 3, "chunk": b"bin-chunk"}]))
    assert frame.mode == COMPRESSED and [r["n"] for r in frame.records] == [1, 2, 3]
    assert frame.chunk == b"bin-chunk"


def test_fluent_bit_metadata_time_and_binary_text_are_accepted():
    (frame,) = frames_of(msgpack.packb(["api.x", [[[event_time(1), {"m": 1}], {b"log": b"line"}]]]))
    assert frame.records == [{"log": "line"}]


def test_nil_is_a_heartbeat():
    assert frames_of(msgpack.packb(None)) == [None]


def test_a_frame_split_at_every_byte_comes_out_whole_once():
    data = msgpack.packb(["api.x", [[1, {"n": i}] for i in range(3)], {"chunk": "z"}])
    reader = FrameReader(LIMIT)
    out = []
    for i in range(len(data)):
        out += list(reader.feed(data[i:i + 1]))
        assert reader.pending == (0 if i == len(data) - 1 else i + 1)
    assert len(out) == 1 and decode_frame(out[0], LIMIT).chunk == "z"


@pytest.mark.parametrize("obj, error, says", [
    ({"tag": "x"}, InvalidBody, "array"),
    (["api.x"], InvalidBody, "2 to 4 items"),
    (["api.x", 1, {}, {}, {}], InvalidBody, "2 to 4 items"),
    ([7, 1, {}], InvalidTag, "integer"),
    (["api..x", 1, {}], InvalidTag, "empty part"),
    (["api x", 1, {}], InvalidTag, "invalid"),
    (["api.x", 1], InvalidBody, "record is missing"),
    (["api.x", 1, "text"], InvalidBody, "not a map"),
    (["api.x", "when", {}], InvalidBody, "entry 0 must be"),  # a str second item is a PackedForward stream
    (["api.x", 1.5, {}, "opt"], InvalidBody, "option is a msgpack string"),
    (["api.x", 1, {}, {"chunk": 5}], InvalidBody, "option chunk"),
    (["api.x", 1, {}, {"size": 2}], InvalidBody, "size says 2 events but the frame holds 1"),
    (["api.x", [[1, {}], [1, "x"]]], InvalidBody, "entry 1's record"),
    (["api.x", [[1, {}], [1]]], InvalidBody, "entry 1 must be"),
    (["api.x", [["noon", {}]]], InvalidBody, "time of entry 0"),
    (["api.x", [[1, {}]], {"size": -1}], InvalidBody, "not a count"),
    (["api.x", [[1, {}]], {"compressed": "zstd"}], InvalidBody, "not supported"),
    (["api.x", [[1, {}]], {"compressed": "gzip"}], InvalidBody, "packed bin"),
    (["api.x", [[1, {}]], {}, {}], InvalidBody, "nothing may follow"),
    (["api.x", b"\x92\x01", {}], InvalidBody, "middle of a msgpack value"),
    (["api.x", b"\xc1", {}], InvalidBody, "malformed msgpack in the packed entries"),
    (["api.x", b"not gzip", {"compressed": "gzip"}], InvalidBody, "corrupt"),
    (["api.x", gzip.compress(b"\x92\x01\x80")[:-6], {"compressed": "gzip"}], InvalidBody, "truncated"),
    (["api.x", [[1, {"k": b"\xff\xfe"}]]], InvalidBody, "not UTF-8"),
])
def test_bad_frames_are_refused_whole_with_a_typed_error(obj, error, says):
    with pytest.raises(error, match=says):
        decode_frame(obj, LIMIT)


def test_one_bad_record_refuses_the_whole_batch():
    with pytest.raises(InvalidBody, match="entry 2"):
        decode_frame(["api.x", [[1, {"ok": 1}], [1, {"ok": 2}], [1, None]], {"chunk": "c"}], LIMIT)


def test_gzip_bomb_is_refused_before_it_fills_memory():
    bomb = gzip.compress(b"\x00" * (10 * LIMIT))
    with pytest.raises(BodyTooLarge):
        decode_frame(["api.x", bomb, {"compressed": "gzip"}], LIMIT)
    assert gunzip(gzip.compress(b"x" * LIMIT), LIMIT) == b"x" * LIMIT


def test_frame_over_the_limit_is_refused_whether_it_arrives_whole_or_in_pieces():
    big = msgpack.packb(["api.x", 1, {"x": "y" * 200}])
    with pytest.raises(BodyTooLarge):
        frames_of(big, limit=100)
    reader = FrameReader(100)
    with pytest.raises(BodyTooLarge):
        for i in range(0, len(big), 30):
            list(reader.feed(big[i:i + 30]))


@pytest.mark.parametrize("data", [b"\xc1", b"\x81\x92\x01\x02\x03", b"\xdd\xff\xff\xff\xff"])
def test_malformed_msgpack_is_invalid_body(data):
    with pytest.raises(InvalidBody, match="malformed msgpack"):
        frames_of(data)


def test_event_time_extension_decodes():
    (obj,) = FrameReader(LIMIT).feed(msgpack.packb(event_time(3, 4)))
    assert obj == EventTime(3, 4)


# --- the shared-key handshake, checked against digests computed here from the spec


def sha512_hex(*parts: bytes | str) -> str:
    return hashlib.sha512(b"".join(p.encode() if isinstance(p, str) else p for p in parts)).hexdigest()


def ping(helo: list, key: str, hostname: str = "client-host", user: str = "", password: str = "") -> list:
    nonce, auth = helo[1]["nonce"], helo[1]["auth"]
    salt = "0123456789abcdef"
    return ["PING", hostname, salt, sha512_hex(salt, hostname, nonce, key),
            user, sha512_hex(auth, user, password) if auth else ""]


def test_handshake_with_the_right_key_is_accepted_and_pong_proves_the_server_knows_it():
    server = Handshake("bus-host", "s3cret")
    helo = server.helo()
    assert helo[0] == "HELO" and len(helo[1]["nonce"]) == 16 and helo[1]["auth"] == b""
    pong, refused = server.answer(ping(helo, "s3cret"))
    assert refused is None
    assert pong == ["PONG", True, "", "bus-host", sha512_hex("0123456789abcdef", "bus-host", helo[1]["nonce"], "s3cret")]


@pytest.mark.parametrize("message, says", [
    (lambda helo: ping(helo, "wrong"), "shared_key mismatch"),
    (lambda helo: ["PING", "h"], "invalid ping"),
    (lambda helo: ["PING", "h", "s", 5, "", ""], "invalid ping"),
    (lambda helo: ["api.x", 1, {}], "invalid ping"),
])
def test_handshake_with_a_wrong_key_or_message_is_refused(message, says):
    server = Handshake("bus-host", "s3cret")
    pong, refused = server.answer(message(server.helo()))
    assert refused == says or says in refused
    assert pong[:2] == ["PONG", False] and pong[3:] == ["", ""]


def test_handshake_with_user_authentication():
    server = Handshake("bus-host", "k", username="alice", password="pw")
    helo = server.helo()
    assert len(helo[1]["auth"]) == 16
    assert server.answer(ping(helo, "k", user="alice", password="pw"))[1] is None
    assert server.answer(ping(helo, "k", user="alice", password="nope"))[1] == "username/password mismatch"
    assert server.answer(ping(helo, "k", user="bob", password="pw"))[1] == "username/password mismatch"


# --- fuzzing: whatever arrives, only our typed errors come out

_TAGS = st.sampled_from(["api.x", "a", "", "api..x", "x" * 300, "ü", "api.*"]) | st.text(max_size=12)
_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
           | st.text(max_size=20) | st.binary(max_size=20)
           | st.builds(event_time, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
           | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)))
_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=5) | st.binary(max_size=5), inner, max_size=4), max_leaves=8)
_OPTIONS = st.none() | st.fixed_dictionaries({}, optional={
    "chunk": st.text(max_size=5) | st.binary(max_size=5) | st.integers(-1000, 1000),
    "size": st.integers(-2, 5) | st.text(max_size=2),
    "compressed": st.sampled_from(["gzip", "text", "zstd"]) | st.none(),
}) | _VALUES
_ENTRY = st.lists(_VALUES, min_size=0, max_size=3) | st.tuples(_LEAVES, _VALUES).map(list)
_FRAMES = st.one_of(
    _VALUES,
    st.tuples(_TAGS, _LEAVES, _VALUES, _OPTIONS).map(list),
    st.tuples(_TAGS, st.lists(_ENTRY, max_size=4), _OPTIONS).map(list),
    st.tuples(_TAGS, st.lists(_ENTRY, max_size=4).map(lambda es: packed(*es)), _OPTIONS).map(list),
    st.tuples(_TAGS, st.lists(_ENTRY, max_size=4).map(lambda es: gzip.compress(packed(*es))), _OPTIONS).map(list),
    st.lists(_VALUES, max_size=6),
)


def decode_everything(data: bytes) -> None:
    try:
        for obj in FrameReader(4096).feed(data):
            frame = decode_frame(obj, 4096)
            if frame is not None:
                assert all(isinstance(r, dict) for r in frame.records)
    except BusError:
        pass


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_raise_only_typed_errors(data):
    decode_everything(data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_FRAMES, st.integers(0, 40))
def test_fuzz_random_msgpack_frames_raise_only_typed_errors(frame, cut):
    data = msgpack.packb(frame, use_bin_type=True)
    decode_everything(data)
    decode_everything(data[:-cut] if cut else data + data)
