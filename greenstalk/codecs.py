"""Codecs: how a job body (bytes) becomes the value a handler gets, and back.

The worker decodes with one; a producer encodes with the same one, so what
it puts is what the handler receives.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Union


class Codec(Protocol):
    """Turns job bodies into the values handlers get, and back."""

    def decode(self, body: bytes) -> Any:
        """The value of a body; raises ValueError (or a subclass) when it cannot."""

    def encode(self, value: Any) -> bytes:
        """The body for a value."""


class BytesCodec:
    """Bodies as they are: ``bytes``."""

    def decode(self, body: bytes) -> bytes:
        return body

    def encode(self, value: bytes) -> bytes:
        return value


class JSONCodec:
    """Bodies as UTF-8 JSON."""

    def decode(self, body: bytes) -> Any:
        return json.loads(body)

    def encode(self, value: Any) -> bytes:
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
