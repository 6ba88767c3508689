"""greenstalk.codecs: what producers encode with and workers decode with."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import greenstalk.worker
from greenstalk.codecs import CODECS, BytesCodec, JSONCodec, get_codec


def test_codecs_round_trip() -> None:
    codec = get_codec("json")
    assert isinstance(codec, JSONCodec)
    assert codec.decode(codec.encode({"a": [1, 2]})) == {"a": [1, 2]}
    assert codec.encode({"a": [1, 2]}) == b'{"a":[1,2]}'
    assert json.loads(codec.encode("é")) == "é"
    assert get_codec("bytes").encode(b"x") == b"x"
    assert greenstalk.worker.JSONCodec is JSONCodec  # the old import path still works
    assert sorted(CODECS) == ["bytes", "json"]


def test_what_cannot_be_encoded_raises() -> None:
    assert BytesCodec().encode(bytearray(b"ab")) == b"ab"
    assert BytesCodec().encode(memoryview(b"ab")) == b"ab"
    with pytest.raises(TypeError, match="the bytes codec puts bytes, not str"):
        BytesCodec().encode("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        JSONCodec().encode({1, 2})
    with pytest.raises(ValueError, match="codec must be one of"):
        get_codec("yaml")
    custom = JSONCodec()
    assert get_codec(custom) is custom


def test_codecs_need_nothing_beyond_the_standard_library() -> None:
    """A producer imports greenstalk.codecs: every module that loads is greenstalk's or Python's."""
    script = textwrap.dedent("""
        import sys, sysconfig
        from pathlib import Path
        import greenstalk.codecs
        roots = [Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")]
        roots.append(Path(greenstalk.__file__).resolve().parent)
        for name, module in sorted(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if path and not any(root in Path(path).resolve().parents for root in roots):
                print(name)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout == ""
