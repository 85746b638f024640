"""PNG/JPEG recognition from magic bytes and headers (no Pillow needed)."""

from __future__ import annotations

import struct

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def sniff_content_type(content: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` from the magic bytes, else ``None``."""
    if content.startswith(PNG_MAGIC):
        return "image/png"
    if content.startswith(JPEG_MAGIC):
        return "image/jpeg"
    return None


def image_dimensions(content: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG IHDR chunk or a JPEG SOFn segment, else ``None``."""
    if content.startswith(PNG_MAGIC):
        if len(content) < 24 or content[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", content[16:24])
        return int(width), int(height)
    if content.startswith(JPEG_MAGIC):
        index = 2
        while index + 9 <= len(content):
            if content[index] != 0xFF:
                return None
            marker = content[index + 1]
            if marker == 0xFF:
                index += 1
                continue
            (length,) = struct.unpack(">H", content[index + 2 : index + 4])
            if marker in _JPEG_SOF_MARKERS:
                height, width = struct.unpack(">HH", content[index + 5 : index + 9])
                return int(width), int(height)
            index += 2 + length
    return None
