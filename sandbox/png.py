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


# Baseline JPEG, one grey component, with the standard (ITU T.81 Annex K) DC and AC
# luminance Huffman tables. Every 8x8 block is mid-grey: DC difference 0 (code ``00``)
# then end-of-block (code ``1010``), so the scan is a repeated 6-bit pattern.
_JPEG_QUANT = bytes([1] * 64)
_JPEG_DC_COUNTS = bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
_JPEG_DC_VALUES = bytes(range(12))
_JPEG_AC_COUNTS = bytes([0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D])
_JPEG_AC_VALUES = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a"
    "25262728292a3435363738393a434445464748494a535455565758595a636465666768696a73747576777879"
    "7a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9"
    "cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa"
)


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def render_jpeg(*, width: int, height: int) -> bytes:
    """A valid grey baseline JPEG of exactly ``width`` x ``height`` (stdlib only)."""
    if not 1 <= width <= 65535 or not 1 <= height <= 65535:
        raise ValueError("width and height must be 1..65535")
    blocks = -(-width // 8) * -(-height // 8)
    bits = "001010" * blocks
    bits += "1" * (-len(bits) % 8)  # pad with 1-bits; "001010" never forms 0xFF
    scan = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    return b"".join(
        [
            b"\xff\xd8",
            _jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            _jpeg_segment(0xDB, b"\x00" + _JPEG_QUANT),
            _jpeg_segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"),
            _jpeg_segment(0xC4, b"\x00" + _JPEG_DC_COUNTS + _JPEG_DC_VALUES),
            _jpeg_segment(0xC4, b"\x10" + _JPEG_AC_COUNTS + _JPEG_AC_VALUES),
            _jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
            scan,
            b"\xff\xd9",
        ]
    )
