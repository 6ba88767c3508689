"""greenstalkd's connection layer without sockets: however the input is cut, the replies agree."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from greenstalk.server.connection import Connection, ServerInfo
from greenstalk.server.state import ServerState

_PIECES = [
    b"put 0 0 60 3\r\nabc\r\n",
    b"put 5 0 60 0\r\n\r\n",
    b"put 0 0 60 2\r\nabcd\r\n",
    b"reserve-with-timeout 0\r\n",
    b"delete 1\r\n",
    b"delete 2\r\n",
    b"release 3 1 0\r\n",
    b"peek-ready\r\n",
    b"use other\r\n",
    b"list-tube-used\r\n",
    b"stats-job 1\r\n",
    b"bogus\r\n",
    b"\n",
    b"\r",
    b"\r\n",
    b"x" * 230 + b"\r\n",
]


def _replies(chunks: list[bytes]) -> bytes:
    """What a fresh connection answers to ``chunks``, received one after another."""
    state = ServerState(lambda: 1_000_000_000, 65535, None)
    out: list[bytes] = []
    connection = Connection(state, ServerInfo("test", 0), out.append, lambda: None)
    for chunk in chunks:
        connection.receive(chunk)
    return b"".join(out)


@given(st.lists(st.sampled_from(_PIECES), max_size=12), st.lists(st.integers(0, 400), max_size=8))
def test_the_replies_do_not_depend_on_how_the_input_is_cut(
    pieces: list[bytes], cuts: list[int]
) -> None:
    """Whole command lines arriving alone take a quicker path than buffered input: same answers."""
    data = b"".join(pieces)
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    chunks = [data[start:end] for start, end in zip(points, points[1:])]
    assert _replies(chunks) == _replies([data])
    assert _replies(pieces) == _replies([data])


def test_a_lone_line_feed_is_not_a_command_line() -> None:
    assert _replies([b"\n", b"list-tube-used\r\n"]) == b"UNKNOWN_COMMAND\r\n"
    assert _replies([b"\n"]) == b""
