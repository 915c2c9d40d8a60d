"""Server-side SVG charts for the dashboard: no JavaScript, nothing fetched from elsewhere.

Colour is never the only carrier of meaning: every bar has its label and its number written
beside it, and each bar is filled with its own hatch pattern. The SVG is `role="img"` with a
`<title>` and a `<desc>` that lists every value, for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

LABEL_WIDTH = 220
BAR_AREA = 360
TEXT_WIDTH = 300
ROW_HEIGHT = 30
BAR_HEIGHT = 20
PAD = 8
LABEL_CHARACTERS = 30  # what fits in the label column; the full label is in the tooltip and <desc>
INK = "#212529"
# (background, stroke, pattern drawing) per series: distinct shapes, not only distinct colours.
_PATTERNS = (
    ("#cfe2ff", "#0a3d91", Markup('<path d="M0,8 L8,0" stroke-width="1.5"/>')),
    ("#ffe5b4", "#7a4a00", Markup('<circle cx="4" cy="4" r="1.6" stroke-width="0"/>')),
    ("#d1e7dd", "#0f5132", Markup('<path d="M0,4 L8,4 M4,0 L4,8" stroke-width="1.2"/>')),
    ("#f8d7da", "#842029", Markup('<path d="M0,0 L8,8" stroke-width="1.5"/>')),
    ("#e2e3e5", "#343a40", Markup('<path d="M0,2 L8,2 M0,6 L8,6" stroke-width="1.2"/>')),
)


@dataclass(frozen=True)
class Bar:
    """One bar: `value` sets its length; `text` is what is written beside it."""

    label: str
    value: float
    text: str


def _defs(chart_id: str) -> Markup:
    pattern = Markup(
        '<pattern id="{id}-p{index}" width="8" height="8" patternUnits="userSpaceOnUse">'
        '<rect width="8" height="8" fill="{background}"/><g stroke="{stroke}" fill="{stroke}">{drawing}</g>'
        "</pattern>"
    )
    return Markup("<defs>{}</defs>").format(
        Markup("").join(
            pattern.format(id=chart_id, index=index, background=background, stroke=stroke, drawing=drawing)
            for index, (background, stroke, drawing) in enumerate(_PATTERNS)
        )
    )


def _frame(chart_id: str, title: str, description: str, bars: Sequence[Bar], body: Markup) -> Markup:
    width = LABEL_WIDTH + BAR_AREA + TEXT_WIDTH
    height = PAD * 2 + ROW_HEIGHT * max(len(bars), 1)
    values = "; ".join(f"{bar.label}: {bar.text}" for bar in bars)
    return Markup(
        '<svg xmlns="http://www.w3.org/2000/svg" id="{id}" class="dashboard-chart" role="img" '
        'aria-label="{title}" aria-describedby="{id}-desc" viewBox="0 0 {width} {height}" width="100%" '
        'style="max-width:{width}px" font-family="system-ui, sans-serif" font-size="13">'
        '<title id="{id}-title">{title}</title><desc id="{id}-desc">{description}</desc>{defs}{body}</svg>'
    ).format(
        id=chart_id,
        title=title,
        width=width,
        height=height,
        description=f"{description} {values}".strip(),
        defs=_defs(chart_id),
        body=body,
    )


def _fit(label: str) -> str:
    return label if len(label) <= LABEL_CHARACTERS else label[: LABEL_CHARACTERS - 1] + "…"


def _row(chart_id: str, index: int, bar: Bar, x: float, width: float) -> Markup:
    y = PAD + index * ROW_HEIGHT
    middle = f"{y + ROW_HEIGHT / 2:.1f}"
    pattern = index % len(_PATTERNS)
    rect = Markup("")
    if width > 0:
        rect = Markup(
            '<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height}" '
            'fill="url(#{id}-p{pattern})" stroke="{stroke}"/>'
        ).format(
            x=x,
            y=y + (ROW_HEIGHT - BAR_HEIGHT) / 2,
            width=width,
            height=BAR_HEIGHT,
            id=chart_id,
            pattern=pattern,
            stroke=_PATTERNS[pattern][1],
        )
    return Markup(
        "<g><title>{label}: {text}</title>"
        '<text x="{label_x}" y="{middle}" text-anchor="end" dominant-baseline="middle" fill="{ink}">'
        "{short}</text>{rect}"
        '<text x="{text_x}" y="{middle}" dominant-baseline="middle" fill="{ink}">{text}</text></g>'
    ).format(
        label=bar.label,
        short=_fit(bar.label),
        text=bar.text,
        label_x=LABEL_WIDTH - PAD,
        text_x=LABEL_WIDTH + BAR_AREA + PAD,
        middle=middle,
        ink=INK,
        rect=rect,
    )


def _scale(bars: Sequence[Bar], largest: float | None) -> float:
    top = largest if largest is not None else max((bar.value for bar in bars), default=0)
    return BAR_AREA / top if top > 0 else 0


def bar_chart(
    bars: Sequence[Bar], *, chart_id: str, title: str, description: str = "", largest: float | None = None
) -> Markup:
    """Horizontal bars from the label column, longest = `largest` (default: the biggest value)."""
    scale = _scale(bars, largest)
    body = Markup("").join(
        _row(chart_id, index, bar, LABEL_WIDTH, max(bar.value, 0) * scale) for index, bar in enumerate(bars)
    )
    return _frame(chart_id, title, description, bars, body)


def funnel_chart(steps: Sequence[Bar], *, chart_id: str, title: str, description: str = "") -> Markup:
    """Centred bars, the first step full width, each later one as wide as its share of the first."""
    scale = _scale(steps[:1], None)
    centre = LABEL_WIDTH + BAR_AREA / 2
    rows = []
    for index, step in enumerate(steps):
        width = min(max(step.value, 0) * scale, BAR_AREA)
        rows.append(_row(chart_id, index, step, centre - width / 2, width))
    body = Markup("").join(rows)
    return _frame(chart_id, title, description, steps, body)
