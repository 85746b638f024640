"""Server-side SVG charts: no JavaScript, no CDN, no float in the money path.

``bar_chart_svg`` draws one bar per point. Bar heights are computed with integer
arithmetic from the exact values (wei totals may be far above 2**53), and labels
are escaped. The returned markup is safe to put in a template as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


@dataclass(frozen=True)
class ChartPoint:
    label: str
    value: int


def bar_chart_svg(
    points: Sequence[ChartPoint],
    *,
    title: str,
    value_label: Callable[[int], str] = str,
    width: int = 640,
    height: int = 200,
) -> SafeString:
    """A bar chart of non-negative integer ``points`` as inline SVG with a text fallback."""
    pad_top, pad_bottom, pad_side = 16, 28, 8
    plot_height = height - pad_top - pad_bottom
    plot_width = width - 2 * pad_side
    peak = max((p.value for p in points), default=0)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line class="chart-axis" x1="{pad_side}" y1="{pad_top + plot_height}" '
        f'x2="{width - pad_side}" y2="{pad_top + plot_height}" />',
    ]
    if not points or peak <= 0:
        parts.append(
            f'<text class="chart-empty" x="{width // 2}" y="{height // 2}" '
            'text-anchor="middle">No usage in this period</text>'
        )
    else:
        slot = plot_width // len(points)
        bar = max(1, slot * 7 // 10)
        label_every = max(1, len(points) // 10)
        for index, point in enumerate(points):
            value = max(point.value, 0)
            bar_height = value * plot_height // peak
            if value and bar_height == 0:
                bar_height = 1  # a non-zero value stays visible
            x = pad_side + index * slot + (slot - bar) // 2
            y = pad_top + plot_height - bar_height
            tip = f"{point.label}: {value_label(value)}"
            parts.append(
                f'<rect class="chart-bar" x="{x}" y="{y}" width="{bar}" height="{bar_height}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            if index % label_every == 0:
                parts.append(
                    f'<text class="chart-label" x="{x + bar // 2}" y="{height - 8}" '
                    f'text-anchor="middle">{escape(point.label)}</text>'
                )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  (every interpolated text is escaped)
