"""Draw the /usage chart: images per day as bars and the top members beside them, as a PNG.

Synchronous and CPU-bound like everything that touches pixels; the caller runs it in a thread.
Text uses Pillow's built-in font (no font files to ship), which has glyphs for printable ASCII
and a little punctuation only. Text is folded to what it can draw ("Zoë" becomes "Zoe", emoji
are dropped, other scripts become "?"), so a chart never shows empty boxes; the cog should
also list the names as message text, where Discord renders them properly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from bot.images import drawable_line, encode_png

__all__ = ["CHART_SIZE", "DRAWABLE", "MAX_TOP", "usage_chart"]

CHART_SIZE: Final = (1000, 500)
MAX_TOP: Final = 10

# Discord's dark theme: the chat background is #313338 and embeds sit on #2b2d31, so a chart on
# #2b2d31 reads as a card. Text and accent colours are Discord's own, so the image looks native.
_BACKGROUND: Final = (43, 45, 49)
_GRID: Final = (63, 65, 71)
_AXIS: Final = (128, 132, 142)
_TEXT: Final = (219, 222, 225)
_MUTED: Final = (148, 155, 164)
_BAR: Final = (88, 101, 242)
_BAR_PEAK: Final = (124, 134, 255)

_MARGIN: Final = 24
_PLOT_LEFT: Final = 64
_PLOT_TOP: Final = 92
_PLOT_RIGHT: Final = 690
_PLOT_BOTTOM: Final = 440
_PANEL_LEFT: Final = 724
_ROW_HEIGHT: Final = 30
_MAX_DATE_LABELS: Final = 8
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Every character Pillow's built-in font (Aileron, reduced) has a glyph for; tests check this
# against the font itself, so a Pillow upgrade that changes the font is noticed.
DRAWABLE: Final = frozenset([chr(code) for code in range(0x20, 0x7F)] + list("©«°±´·»‘’“”…‹›⁄™"))

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def usage_chart(days: Sequence[tuple[date, int]], top: Sequence[tuple[str, int]], *, title: str) -> bytes:
    """Draw images per day as bars with the top members beside them and return a PNG.

    ``days`` should hold every day of the period, zeros included, for a steady axis; days
    missing between the first and the last are drawn as zero. ``top`` is (display name, images),
    drawn in the given order, at most ``MAX_TOP`` of them.
    """
    if any(count < 0 for _, count in days) or any(count < 0 for _, count in top):
        raise ValueError("image counts must be 0 or more")
    series = _fill_gaps(days)
    image = Image.new("RGB", CHART_SIZE, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    fonts = _Fonts()

    title = _fit(draw, drawable_line(title, DRAWABLE), fonts.title, CHART_SIZE[0] - 2 * _MARGIN)
    draw.text((_MARGIN, _MARGIN), title, font=fonts.title, fill=_TEXT)
    draw.text((_MARGIN, _MARGIN + 32), _summary(series), font=fonts.small, fill=_MUTED)
    _draw_bars(draw, series, fonts)
    _draw_top(draw, top, fonts)
    return encode_png(image)


class _Fonts:
    """The three sizes the chart uses, loaded per call: font objects are not shared across threads."""

    def __init__(self) -> None:
        self.title: _Font = ImageFont.load_default(size=22)
        self.body: _Font = ImageFont.load_default(size=15)
        self.small: _Font = ImageFont.load_default(size=13)


def _fill_gaps(days: Sequence[tuple[date, int]]) -> list[tuple[date, int]]:
    if not days:
        return []
    counts: dict[date, int] = {}
    for day, count in days:
        counts[day] = counts.get(day, 0) + count
    first, last = min(counts), max(counts)
    return [
        (first + timedelta(n), counts.get(first + timedelta(n), 0)) for n in range((last - first).days + 1)
    ]


def _summary(series: Sequence[tuple[date, int]]) -> str:
    if not series:
        return "No data"
    total = sum(count for _, count in series)
    span = f"{_label(series[0][0])} - {_label(series[-1][0])}"
    if total == 0:
        return f"0 images · {span}"
    peak_day, peak = series[_peak_index(series)]
    return f"{total:,} {'image' if total == 1 else 'images'} · peak {peak:,} on {_label(peak_day)} · {span}"


def _draw_bars(draw: ImageDraw.ImageDraw, series: Sequence[tuple[date, int]], fonts: _Fonts) -> None:
    peak = max((count for _, count in series), default=0)
    top_value, step = _axis(peak)
    height = _PLOT_BOTTOM - _PLOT_TOP

    for value in range(0, top_value + 1, step):
        y = _PLOT_BOTTOM - round(height * value / top_value)
        if value:
            draw.line([(_PLOT_LEFT, y), (_PLOT_RIGHT, y)], fill=_GRID, width=1)
        draw.text((_PLOT_LEFT - 8, y), f"{value:,}", font=fonts.small, fill=_MUTED, anchor="rm")
    draw.line([(_PLOT_LEFT, _PLOT_BOTTOM), (_PLOT_RIGHT, _PLOT_BOTTOM)], fill=_AXIS, width=1)

    if peak == 0:
        # Empty data comes from a period with no rows at all; /usage always asks for 30 days.
        span = len(series) or 30
        message = f"No images in the last {span} days" if span != 1 else "No images on this day"
        centre = ((_PLOT_LEFT + _PLOT_RIGHT) // 2, (_PLOT_TOP + _PLOT_BOTTOM) // 2)
        draw.text(centre, message, font=fonts.body, fill=_MUTED, anchor="mm")
    if not series:
        return

    peak_index = _peak_index(series)
    slot = (_PLOT_RIGHT - _PLOT_LEFT) / len(series)
    # A gap between bars keeps 30 of them distinguishable; very long series get touching bars.
    gap = min(6.0, slot * 0.25)
    for index, (_, count) in enumerate(series):
        if count == 0:
            continue
        left = _PLOT_LEFT + index * slot + gap / 2
        right = max(left + 1, _PLOT_LEFT + (index + 1) * slot - gap / 2 - 1)
        # At least 2 px tall, so a day with one image is visible next to a day with hundreds.
        top = min(_PLOT_BOTTOM - 2, _PLOT_BOTTOM - round(height * count / top_value))
        draw.rectangle(
            [(round(left), top), (round(right), _PLOT_BOTTOM - 1)],
            fill=_BAR_PEAK if index == peak_index else _BAR,
        )
        # Only one peak is labelled: equal neighbours' labels would overlap at 30 bars in 626 px.
        if index == peak_index:
            middle = round((left + right) / 2)
            draw.text((middle, top - 4), f"{count:,}", font=fonts.small, fill=_TEXT, anchor="md")

    # Label every few days counting back from the newest, so the most recent day is always named.
    every = max(1, math.ceil(len(series) / _MAX_DATE_LABELS))
    for index in range(len(series) - 1, -1, -every):
        x = round(_PLOT_LEFT + (index + 0.5) * slot)
        draw.line([(x, _PLOT_BOTTOM), (x, _PLOT_BOTTOM + 4)], fill=_AXIS, width=1)
        draw.text((x, _PLOT_BOTTOM + 8), _label(series[index][0]), font=fonts.small, fill=_MUTED, anchor="mt")


def _peak_index(series: Sequence[tuple[date, int]]) -> int:
    """Return the index of the most recent day with the highest count."""
    peak = max(count for _, count in series)
    return max(index for index, (_, count) in enumerate(series) if count == peak)


def _axis(peak: int) -> tuple[int, int]:
    """Return a round top value at or above ``peak`` and a round step giving 2-5 gridlines."""
    if peak <= 0:
        return 1, 1
    raw = peak / 4
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, int(step))
    return math.ceil(peak / step) * step, step


def _draw_top(draw: ImageDraw.ImageDraw, top: Sequence[tuple[str, int]], fonts: _Fonts) -> None:
    right = CHART_SIZE[0] - _MARGIN
    draw.text((_PANEL_LEFT, _PLOT_TOP - 24), "Top members", font=fonts.body, fill=_TEXT)
    draw.line([(_PANEL_LEFT, _PLOT_TOP - 2), (right, _PLOT_TOP - 2)], fill=_GRID, width=1)
    if not top:
        draw.text((_PANEL_LEFT, _PLOT_TOP + 10), "Nobody yet", font=fonts.body, fill=_MUTED)
        return
    for rank, (name, count) in enumerate(top[:MAX_TOP], start=1):
        y = _PLOT_TOP + 10 + (rank - 1) * _ROW_HEIGHT
        number = f"{count:,}"
        draw.text((_PANEL_LEFT, y), f"{rank}.", font=fonts.body, fill=_MUTED)
        draw.text((right, y), number, font=fonts.body, fill=_TEXT, anchor="ra")
        name_left = _PANEL_LEFT + 34
        room = right - draw.textlength(number, font=fonts.body) - 12 - name_left
        draw.text(
            (name_left, y),
            _fit(draw, drawable_line(name, DRAWABLE), fonts.body, room),
            font=fonts.body,
            fill=_TEXT,
        )


def _fit(draw: ImageDraw.ImageDraw, text: str, font: _Font, room: float) -> str:
    """Shorten ``text`` with an ellipsis until it is at most ``room`` pixels wide."""
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + "…", font=font) > room:
        text = text[:-1]
    return text.rstrip() + "…"


def _label(day: date) -> str:
    # Not strftime("%b"): that follows the host's locale, and the chart should not.
    return f"{_MONTHS[day.month - 1]} {day.day}"
