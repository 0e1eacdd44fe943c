"""The /usage chart: a small dark PNG a moderator can read at a glance."""

from __future__ import annotations

import io
from datetime import date, timedelta

import pytest
from PIL import Image, ImageChops, ImageFont

from bot.charts import CHART_SIZE, DRAWABLE, MAX_TOP, usage_chart

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LIMIT = 200 * 1024
FIRST = date(2026, 2, 10)
# Regions of the 1000x500 layout: the bar plot on the left, the top-members panel on the right.
PLOT = (60, 90, 700, 470)
PANEL = (720, 60, 1000, 500)
BAR_BLUE = (88, 101, 242)


def month(counts: list[int], first: date = FIRST) -> list[tuple[date, int]]:
    return [(first + timedelta(days=n), count) for n, count in enumerate(counts)]


BUSY = month([(n * 37) % 23 for n in range(30)])
TOP = [("Alice", 340), ("Bob", 200), ("Carol", 120)]


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def differs(a: bytes, b: bytes, box: tuple[int, int, int, int]) -> bool:
    diff = ImageChops.difference(decode(a).convert("RGB").crop(box), decode(b).convert("RGB").crop(box))
    return diff.getbbox() is not None


def has_colour(data: bytes, colour: tuple[int, int, int]) -> bool:
    image = decode(data).convert("RGB")
    return any(rgb == colour for _, rgb in image.getcolors(maxcolors=1 << 20) or [])


def test_the_chart_is_a_dark_png_of_the_expected_size_and_under_200_kb() -> None:
    data = usage_chart(BUSY, TOP, title="Easel usage - Test Server")

    assert data.startswith(PNG_SIGNATURE)
    assert len(data) < LIMIT
    image = decode(data)
    assert image.format == "PNG"
    assert image.size == CHART_SIZE
    assert 900 <= image.width <= 1100
    assert 400 <= image.height <= 600
    # Dark theme: the corner (background) is dark.
    red, green, blue = image.convert("RGB").getpixel((2, 2))  # type: ignore[misc]
    assert max(red, green, blue) < 80


def test_a_busy_chart_with_many_large_values_still_fits() -> None:
    counts = [(n * 7919) % 100_000 for n in range(90)]
    top = [(f"member with a rather long display name {n}", 10**6 - n) for n in range(25)]

    data = usage_chart(month(counts), top, title="A" * 300)

    assert len(data) < LIMIT
    assert decode(data).size == CHART_SIZE


def test_the_same_data_gives_the_same_picture_and_different_data_a_different_one() -> None:
    assert usage_chart(BUSY, TOP, title="t") == usage_chart(BUSY, TOP, title="t")
    changed = [*BUSY[:-1], (BUSY[-1][0], BUSY[-1][1] + 5)]
    assert differs(usage_chart(BUSY, TOP, title="t"), usage_chart(changed, TOP, title="t"), PLOT)


def test_bars_are_drawn_for_days_with_images() -> None:
    assert has_colour(usage_chart(BUSY, TOP, title="t"), BAR_BLUE)


def test_empty_data_says_there_were_no_images() -> None:
    empty = usage_chart([], [], title="Easel usage")
    with_data = usage_chart(BUSY, [], title="Easel usage")

    assert decode(empty).size == CHART_SIZE
    assert not has_colour(empty, BAR_BLUE)
    # The note is drawn in the middle of the plot.
    middle = decode(empty).convert("L").crop((250, 250, 500, 285))
    assert sum(middle.histogram()[101:]) > 0
    assert differs(empty, with_data, PLOT)


def test_all_zero_days_draw_an_axis_and_no_bars() -> None:
    zeros = usage_chart(month([0] * 30), TOP, title="Easel usage")

    assert decode(zeros).size == CHART_SIZE
    assert not has_colour(zeros, BAR_BLUE)
    # Date labels differ from the empty chart's (which has none).
    assert differs(zeros, usage_chart([], TOP, title="Easel usage"), (60, 440, 700, 470))


def test_missing_days_are_drawn_as_zero() -> None:
    gappy = [day for day in BUSY if day[0].day % 3]
    filled = [(day, count if day.day % 3 else 0) for day, count in BUSY]

    assert usage_chart(gappy, TOP, title="t") == usage_chart(filled, TOP, title="t")


def test_the_top_members_names_are_drawn() -> None:
    before = usage_chart(BUSY, TOP, title="t")
    renamed = usage_chart(BUSY, [("Alicia", 340), *TOP[1:]], title="t")

    assert differs(before, renamed, PANEL)
    assert not differs(before, renamed, PLOT)


def test_the_top_members_counts_are_drawn() -> None:
    assert differs(
        usage_chart(BUSY, TOP, title="t"), usage_chart(BUSY, [("Alice", 341), *TOP[1:]], title="t"), PANEL
    )


def test_only_the_first_ten_members_are_listed() -> None:
    top = [(f"member{n}", 100 - n) for n in range(MAX_TOP)]
    extra = [*top, ("one too many", 1)]

    assert usage_chart(BUSY, top, title="t") == usage_chart(BUSY, extra, title="t")


def test_names_are_folded_to_what_the_built_in_font_can_draw() -> None:
    def chart(name: str) -> bytes:
        return usage_chart(BUSY, [(name, 5)], title="t")

    assert chart("Zoë") == chart("Zoe")
    assert chart("Zoë 🌸") == chart("Zoe")
    assert chart("Ｂｏｂ") == chart("Bob")
    assert chart("日本語") == chart("?")
    assert chart("two\nlines") == chart("two lines")


def test_the_drawable_set_matches_pillows_built_in_font() -> None:
    font = ImageFont.load_default(size=15)

    def glyph(char: str) -> tuple[tuple[int, int], bytes]:
        mask = font.getmask(char)
        return mask.size, bytes(mask)

    missing = glyph("\uffff")
    assert [char for char in sorted(DRAWABLE) if char != " " and glyph(char) == missing] == []
    extra = [
        chr(code) for code in range(0x20, 0x2200) if chr(code) not in DRAWABLE and glyph(chr(code)) != missing
    ]
    assert extra == []


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        usage_chart(month([1, -1]), [], title="t")
