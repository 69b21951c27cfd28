"""A model's slot: standard CRC-32 of its UTF-8 name, mod `SLOT_COUNT`.

The same number HAProxy computes with `req.hdr(x-hebbian-model),crc32,mod(1024)` (plain
`crc32`: the standard CRC-32 of zlib, Ethernet and PNG, of the raw header value; `crc32(1)`
would add an avalanche step and disagree), so
the router and the servers agree on where a model lives. An empty name stands for the
server's default model and has that model's slot.
"""

from __future__ import annotations

import zlib

SLOT_COUNT = 1024
MODEL_HEADER = "x-hebbian-model"  # the request header the router routes by


def slot_of(name: str, default_model: str = "default") -> int:
    """The slot (0..SLOT_COUNT-1) of model `name`; "" is `default_model`."""
    return zlib.crc32((name or default_model).encode("utf-8")) % SLOT_COUNT
