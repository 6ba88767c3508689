"""Codecs: how a job body (bytes) becomes the value a handler gets, and back.

The worker decodes with one; a producer encodes with the same one, so what
it puts is what the handler receives::

    from greenstalk.codecs import get_codec

    json_codec = get_codec("json")
    client.put(json_codec.encode({"to": "ada@example.com"}))   # the producer
    worker = greenstalk.Worker(codec=json_codec)                # the consumer

A producer that lives beside its worker can use the worker's own:
``client.put(worker.codec.encode(value))``. Only the standard library is
used here, so producers need no extra.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Union


class Codec(Protocol):
    """Turns job bodies into the values handlers get, and back."""

    def decode(self, body: bytes) -> Any:
        """The value of a body; raises ValueError (or a subclass) when it cannot."""

    def encode(self, value: Any) -> bytes:
        """The body for a value; raises TypeError or ValueError when there is none."""


class BytesCodec:
    """Bodies as they are: ``bytes``."""

    def decode(self, body: bytes) -> bytes:
        """The body itself."""
        return body

    def encode(self, value: bytes | bytearray | memoryview) -> bytes:
        """The value as bytes; raises TypeError for anything else (a str, say)."""
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise TypeError(
            f"the bytes codec puts bytes, not {type(value).__name__}: encode it first, "
            "or use the json codec"
        )


class JSONCodec:
    """Bodies as UTF-8 JSON."""

    def decode(self, body: bytes) -> Any:
        """The value of a JSON body; raises ValueError for bytes that are not UTF-8 JSON."""
        return json.loads(body)

    def encode(self, value: Any) -> bytes:
        """Compact JSON; raises TypeError (or ValueError) for what JSON cannot hold."""
        return json.dumps(value, separators=(",", ":")).encode()


#: The codecs known by name.
CODECS: dict[str, Codec] = {"bytes": BytesCodec(), "json": JSONCodec()}

CodecSpec = Union[str, Codec]


def get_codec(codec: CodecSpec) -> Codec:
    """The codec called ``codec`` (``"bytes"``, ``"json"``), or ``codec`` itself.

    Raises ValueError for an unknown name.
    """
    if isinstance(codec, str):
        try:
            return CODECS[codec]
        except KeyError:
            raise ValueError(
                f"codec must be one of {sorted(CODECS)} or a Codec, not {codec!r}"
            ) from None
    return codec


__all__ = ["CODECS", "BytesCodec", "Codec", "CodecSpec", "JSONCodec", "get_codec"]
