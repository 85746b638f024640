"""Deterministic placeholder images: stdlib-only PNGs of exactly the requested size.

Same (model, seed, width, height, prompt) -> byte-identical PNG. The picture is an 8x8
grid of flat colour blocks whose colours come from
``shake_256(model ‖ seed ‖ WxH ‖ prompt)``, plus one ``tEXt`` chunk (keyword
``livepeer-sandbox``) holding ASCII JSON ``{"prompt", "seed", "model_id"}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import zlib

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRID = 8
TEXT_KEYWORD = b"livepeer-sandbox"
MAX_SEED = 2**32 - 1


def default_seed(prompt: str) -> int:
    """The seed used when none is given: the first 4 bytes of sha256(prompt), 0..2**32-1."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:4], "big")


def palette(*, model_id: str, seed: int, width: int, height: int, prompt: str) -> bytes:
    """GRID*GRID RGB triples (row-major) derived from the inputs."""
    material = b"\x00".join(
        [
            model_id.encode("utf-8"),
            str(seed).encode("ascii"),
            f"{width}x{height}".encode("ascii"),
            prompt.encode("utf-8"),
        ]
    )
    return hashlib.shake_256(material).digest(GRID * GRID * 3)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _spans(length: int) -> list[int]:
    """How many pixels of ``length`` fall in each of the GRID cells (cell = i * GRID // length)."""
    counts = [0] * GRID
    for cell in range(GRID):
        start = -(-cell * length // GRID)
        end = -(-(cell + 1) * length // GRID)
        counts[cell] = end - start
    return counts


def render_png(*, width: int, height: int, model_id: str, seed: int, prompt: str) -> bytes:
    """A truecolour 8-bit PNG of exactly ``width`` x ``height`` pixels (both >= 1)."""
    if width < 1 or height < 1:
        raise ValueError("width and height must be >= 1")
    colours = palette(model_id=model_id, seed=seed, width=width, height=height, prompt=prompt)
    column_spans = _spans(width)
    raw_parts = []
    for row_cell, row_count in enumerate(_spans(height)):
        if row_count == 0:
            continue
        line = b"\x00" + b"".join(
            colours[(row_cell * GRID + column) * 3 : (row_cell * GRID + column) * 3 + 3] * count
            for column, count in enumerate(column_spans)
        )
        raw_parts.append(line * row_count)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    text = json.dumps(
        {"prompt": prompt, "seed": seed, "model_id": model_id}, ensure_ascii=True, sort_keys=True
    ).encode("ascii")
    return b"".join(
        [
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"tEXt", TEXT_KEYWORD + b"\x00" + text),
            _chunk(b"IDAT", zlib.compress(b"".join(raw_parts), 6)),
            _chunk(b"IEND", b""),
        ]
    )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_text(data: bytes) -> dict[str, object]:
    """The sandbox tEXt metadata of a PNG rendered here ({} if absent)."""
    position = 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        payload = data[position + 8 : position + 8 + length]
        if kind == b"tEXt" and payload.startswith(TEXT_KEYWORD + b"\x00"):
            result: dict[str, object] = json.loads(payload[len(TEXT_KEYWORD) + 1 :])
            return result
        position += 12 + length
    return {}
