"""Pure units: the deterministic PNG and the exact wei -> USD-micros conversion."""

from __future__ import annotations

import struct
import zlib
from decimal import Decimal
from fractions import Fraction

import pytest

from sandbox.money import format_exact_usd_micros, usd_micros_exact, usd_micros_for_fee
from sandbox.png import PNG_SIGNATURE, default_seed, png_size, png_text, render_png


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == PNG_SIGNATURE
    found, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        payload = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF
        found.append((kind, payload))
        position += 12 + length
    return found


@pytest.mark.parametrize(("width", "height"), [(1, 1), (7, 3), (8, 8), (512, 512), (1024, 576)])
def test_png_has_exactly_the_requested_size(width: int, height: int) -> None:
    data = render_png(width=width, height=height, model_id="m", seed=1, prompt="p")
    assert png_size(data) == (width, height)
    parts = chunks(data)
    assert [kind for kind, _ in parts] == [b"IHDR", b"tEXt", b"IDAT", b"IEND"]
    assert parts[0][1] == struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = zlib.decompress(parts[2][1])
    assert len(raw) == height * (1 + 3 * width)
    assert all(raw[row * (1 + 3 * width)] == 0 for row in range(height))


def test_png_is_an_8x8_grid_of_flat_blocks() -> None:
    width, height = 64, 32
    raw = zlib.decompress(
        chunks(render_png(width=width, height=height, model_id="m", seed=1, prompt="p"))[2][1]
    )
    stride = 1 + 3 * width

    def pixel(x: int, y: int) -> bytes:
        return raw[y * stride + 1 + 3 * x : y * stride + 4 + 3 * x]

    for cell_y in range(8):
        for cell_x in range(8):
            block = {pixel(cell_x * 8 + dx, cell_y * 4 + dy) for dx in range(8) for dy in range(4)}
            assert len(block) == 1
    assert len({pixel(x * 8, y * 4) for x in range(8) for y in range(8)}) > 32


def test_png_is_deterministic_and_input_sensitive() -> None:
    args = {
        "width": 256,
        "height": 128,
        "model_id": "ByteDance/SDXL-Lightning",
        "seed": 42,
        "prompt": "fox",
    }
    first = render_png(**args)  # type: ignore[arg-type]
    assert first == render_png(**args)  # type: ignore[arg-type]
    for change in ({"seed": 43}, {"prompt": "fox!"}, {"model_id": "other"}, {"width": 264}):
        assert render_png(**{**args, **change}) != first  # type: ignore[arg-type]
    assert png_text(first) == {"model_id": "ByteDance/SDXL-Lightning", "prompt": "fox", "seed": 42}
    assert png_text(render_png(width=8, height=8, model_id="m", seed=0, prompt="café ☕")) == {
        "model_id": "m", "prompt": "café ☕", "seed": 0,
    }  # fmt: skip


def test_default_seed_is_a_stable_uint32() -> None:
    assert default_seed("fox") == default_seed("fox")
    assert default_seed("fox") != default_seed("cat")
    assert 0 <= default_seed("fox") < 2**32
    assert default_seed("fox") == 2003612454  # first 4 bytes of sha256(b"fox")


@pytest.mark.parametrize(
    ("fee_wei", "eth_usd", "micros"),
    [
        (0, "3000", 0),
        (1, "3000", 1),  # 3e-9 micros rounds up to 1
        (4_999_999_389_696, "3000", 15000),  # 1024x1024 at 4768371 wei/pixel
        (1_249_999_847_424, "3000", 3750),  # 512x512
        (10**12, "3000", 3000),  # exact, no rounding
        (10**12 + 1, "3000", 3001),
        (2**256 - 1, "3000", -(-((2**256 - 1) * 3000) // 10**12)),
        (10**18, "3000.123456789", 3_000_123_457),  # 1 ETH
    ],
)
def test_usd_micros_for_fee(fee_wei: int, eth_usd: str, micros: int) -> None:
    assert usd_micros_for_fee(fee_wei, Decimal(eth_usd)) == micros


def test_exact_usd_micros_formatting() -> None:
    """networkFeeUsdExact is USD micros (pymthouse formatExactUsdMicros), not dollars."""
    exact = usd_micros_exact(4_999_999_389_696, Decimal("3000"))
    assert exact == Fraction(14_999_998_169_088, 10**9)
    # upstream's JS double prints "14999.998169087999"; the sandbox keeps the exact value
    assert format_exact_usd_micros(exact) == "14999.998169088"
    assert format_exact_usd_micros(usd_micros_exact(4_768_371_000_000, Decimal(3000))) == (
        "14305.113"
    )
    assert format_exact_usd_micros(Fraction(0)) == "0"
    assert format_exact_usd_micros(Fraction(3_000_000)) == "3000000"
    assert format_exact_usd_micros(Fraction(932)) == "932"
    assert format_exact_usd_micros(Fraction(932, 1000)) == "0.932"
    assert format_exact_usd_micros(Fraction(29_999_996_338_176, 10**6)) == "29999996.338176"
    # plain digits at any size (upstream's toFixed switches to "3.47e+65" from 1e21)
    scaled = (2**256 - 1) * 3  # x 3000 / 10**12 = x 3 / 10**9
    expected = f"{scaled // 10**9}.{scaled % 10**9:09d}".rstrip("0")
    assert format_exact_usd_micros(usd_micros_exact(2**256 - 1, Decimal("3000"))) == expected


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        # at most 12 fraction digits, rounded to nearest as toFixed(12) does; a tie
        # rounds up (toFixed picks the larger n), not half-even
        (Fraction(1, 10**13), "0"),
        (Fraction(4, 10**13), "0"),
        (Fraction(5, 10**13), "0.000000000001"),
        (Fraction(25, 10**13), "0.000000000003"),
        (Fraction(35, 10**13), "0.000000000004"),
        (Fraction(1, 3), "0.333333333333"),
        (Fraction(2, 3), "0.666666666667"),
        (Fraction(10**13) + Fraction(1, 10**12), "10000000000000.000000000001"),
        (Fraction(999_999_999_999_999, 10**15), "1"),
        (Fraction(15, 10), "1.5"),
    ],
)
def test_exact_usd_micros_rounding(micros: Fraction, text: str) -> None:
    assert format_exact_usd_micros(micros) == text


def test_exact_usd_micros_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_exact_usd_micros(Fraction(-1, 2))
