"""Uploads are checked by content, and results always fit Discord: behaviour of bot.images."""

from __future__ import annotations

import io
import random
import time
import zlib
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageCms, ImageFile

from bot import images
from bot.errors import InvalidInput, RenderFailed

MiB = 2**20
LIMITS: dict[str, int] = {"max_bytes": 10 * MiB, "max_pixels": 4096 * 4096}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RED = (255, 0, 0)
BLUE = (0, 0, 255)


# --------------------------------------------------------------------------- helpers


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    bands = len(mode)
    return Image.frombytes(mode, (width, height), random.Random(seed).randbytes(width * height * bands))


def solid(colour: str | tuple[int, ...], size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 8) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def png_claiming(width: int, height: int) -> bytes:
    """Return a tiny real PNG whose IHDR (with a valid CRC) claims ``width``×``height``."""
    data = bytearray(encode(solid("white", (16, 16)), "PNG"))
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def refusal(data: bytes, **limits: int) -> str:
    with pytest.raises(InvalidInput) as caught:
        images.validate_upload(data, **{**LIMITS, **limits})
    return str(caught.value)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel data is decoded."""

    def refuse_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_load)


# --------------------------------------------------------------------------- accepted uploads


@pytest.mark.parametrize(
    ("fmt", "params", "expected_format", "tolerance"),
    [
        ("PNG", {}, "png", 0),
        ("JPEG", {"quality": 95}, "jpeg", 8),
        ("WEBP", {"quality": 90}, "webp", 8),
        ("WEBP", {"lossless": True}, "webp", 0),
        ("GIF", {}, "gif", 0),
    ],
)
def test_each_accepted_format_becomes_a_png_of_the_same_picture(
    fmt: str, params: dict[str, Any], expected_format: str, tolerance: int
) -> None:
    source = images.validate_upload(encode(solid(RED, (64, 48)), fmt, **params), **LIMITS)

    assert (source.width, source.height, source.format, source.has_alpha) == (64, 48, expected_format, False)
    assert source.png.startswith(PNG_SIGNATURE)
    result = decode(source.png)
    assert result.mode == "RGB"
    assert result.size == (64, 48)
    assert close_to(result.getpixel((10, 10)), RED, tolerance)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fmt", "params", "expected_format"),
    [
        ("GIF", {"duration": 100, "loop": 0}, "gif"),
        ("PNG", {"duration": 100}, "png"),  # APNG
        ("WEBP", {"duration": 100, "lossless": True}, "webp"),
    ],
)
def test_animations_contribute_their_first_frame(
    fmt: str, params: dict[str, Any], expected_format: str
) -> None:
    first, second = solid(RED, (40, 40)), solid(BLUE, (40, 40))
    data = encode(first, fmt, save_all=True, append_images=[second], **params)

    source = images.validate_upload(data, **LIMITS)

    assert source.format == expected_format
    assert decode(source.png).convert("RGB").getpixel((20, 20)) == RED


def test_rgba_transparency_is_preserved() -> None:
    image = solid((0, 128, 255, 128), (64, 64), "RGBA")
    image.paste((0, 0, 0, 0), (0, 0, 32, 64))

    source = images.validate_upload(encode(image, "PNG"), **LIMITS)

    result = decode(source.png)
    assert source.has_alpha
    assert result.mode == "RGBA"
    assert result.getpixel((5, 5))[3] == 0  # type: ignore[index]
    assert result.getpixel((50, 5)) == (0, 128, 255, 128)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_an_alpha_channel(fmt: str) -> None:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (16, 0, 32, 32))

    source = images.validate_upload(encode(image, fmt, transparency=0), **LIMITS)

    result = decode(source.png)
    assert source.has_alpha
    assert result.getpixel((4, 4))[3] == 0  # type: ignore[index]
    assert result.getpixel((24, 4)) == (255, 0, 0, 255)


def test_fully_opaque_alpha_is_dropped() -> None:
    source = images.validate_upload(encode(solid((9, 9, 9, 255), mode="RGBA"), "PNG"), **LIMITS)

    assert not source.has_alpha
    assert decode(source.png).mode == "RGB"


def test_webp_alpha_is_preserved() -> None:
    image = solid((0, 0, 0, 0), (32, 32), "RGBA")
    image.paste((255, 0, 0, 255), (16, 0, 32, 32))

    source = images.validate_upload(encode(image, "WEBP", lossless=True), **LIMITS)

    assert source.has_alpha
    assert decode(source.png).getpixel((4, 4))[3] == 0  # type: ignore[index]


def test_exif_orientation_is_applied() -> None:
    stored = solid(BLUE, (64, 32))
    stored.paste(RED, (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: the stored left edge becomes the top

    source = images.validate_upload(encode(stored, "JPEG", exif=exif, quality=95), **LIMITS)

    upright = decode(source.png)
    assert (source.width, source.height) == upright.size == (32, 64)
    assert close_to(upright.getpixel((16, 8)), RED)  # type: ignore[arg-type]
    assert close_to(upright.getpixel((16, 56)), BLUE)  # type: ignore[arg-type]
    assert "exif" not in upright.info


def test_cmyk_jpeg_becomes_rgb() -> None:
    source = images.validate_upload(encode(solid((0, 255, 255, 0), mode="CMYK"), "JPEG"), **LIMITS)

    pixel = decode(source.png).getpixel((5, 5))
    assert isinstance(pixel, tuple)
    assert len(pixel) == 3
    assert pixel[0] > 200
    assert pixel[1] < 60
    assert pixel[2] < 60


def test_sixteen_bit_grey_is_scaled_not_blown_out_to_white() -> None:
    source = images.validate_upload(encode(Image.new("I;16", (32, 32), 40000), "PNG"), **LIMITS)

    red, green, blue = decode(source.png).getpixel((5, 5))  # type: ignore[misc]
    assert red == green == blue == 40000 >> 8


def test_an_embedded_colour_profile_is_applied_and_dropped() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(solid((200, 100, 50)), "PNG", icc_profile=srgb)

    result = decode(images.validate_upload(data, **LIMITS).png)

    assert close_to(result.getpixel((5, 5)), (200, 100, 50), 2)  # type: ignore[arg-type]
    assert "icc_profile" not in result.info


def test_the_most_extreme_accepted_shape_is_eight_to_one() -> None:
    source = images.validate_upload(encode(solid("white", (16, 128)), "PNG"), **LIMITS)

    assert (source.width, source.height) == (16, 128)


# --------------------------------------------------------------------------- refused uploads


def test_an_empty_file_is_refused() -> None:
    assert "empty" in refusal(b"")


def test_a_file_over_the_size_limit_is_refused_naming_both_sizes() -> None:
    message = refusal(PNG_SIGNATURE + bytes(int(12.5 * MiB) - 8))

    assert "12.5 MB" in message
    assert "10 MB" in message


def test_a_file_a_few_bytes_over_the_limit_is_called_just_over() -> None:
    assert "just over the 10 MB limit" in refusal(PNG_SIGNATURE + bytes(10 * MiB))


def test_a_text_file_named_png_is_refused_as_not_an_image() -> None:
    message = refusal(b"Hello! This is a text file that someone named cat.png\n")

    assert "isn't an image" in message
    assert "PNG, JPEG, WebP or GIF" in message


def test_a_known_but_unsupported_format_is_named() -> None:
    message = refusal(encode(solid(RED), "BMP"))

    assert "BMP" in message
    assert "PNG, JPEG, WebP or GIF" in message


def test_a_png_signature_followed_by_garbage_is_refused_as_damaged() -> None:
    message = refusal(PNG_SIGNATURE + random.Random(1).randbytes(300))

    assert "damaged or incomplete" in message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_a_truncated_file_is_refused_as_damaged(fmt: str) -> None:
    data = encode(noise(128, 128), fmt)

    message = refusal(data[: len(data) // 2])

    assert "damaged or incomplete" in message


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(no_decoding: None) -> None:
    data = png_claiming(50_000, 50_000)

    started = time.perf_counter()
    message = refusal(data)

    assert time.perf_counter() - started < 0.2
    assert len(data) < 200
    assert "50000×50000" in message
    assert "16.8 megapixels" in message


def test_the_bomb_guard_does_not_depend_on_pillows_global_limit(
    monkeypatch: pytest.MonkeyPatch, no_decoding: None
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    assert "2000×1000" in refusal(png_claiming(2000, 1000), max_pixels=1_000_000)


def test_a_real_image_over_the_pixel_cap_is_refused() -> None:
    assert "pixels" in refusal(encode(solid("white", (2000, 1000)), "PNG"), max_pixels=1_000_000)


def test_a_gif_frame_larger_than_its_declared_screen_is_refused_before_decoding(no_decoding: None) -> None:
    data = bytearray(encode(solid(RED, (64, 64)).convert("P"), "GIF"))
    data[6:10] = (16).to_bytes(2, "little") * 2  # the logical screen claims 16×16

    assert "64×64" in refusal(bytes(data), max_pixels=1000)


@pytest.mark.parametrize("side", [40, 50])  # Pillow warns above its limit and raises above twice it
def test_pillows_own_bomb_guard_becomes_a_refusal(monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    assert "more pixels than Easel accepts" in refusal(encode(solid(RED, (side, side)), "PNG"))


@pytest.mark.parametrize(("size", "expected"), [((8, 8), "at least 16"), ((15, 300), "at least 16")])
def test_tiny_images_are_refused(size: tuple[int, int], expected: str) -> None:
    assert expected in refusal(encode(solid("white", size), "PNG"))


@pytest.mark.parametrize("size", [(400, 20), (16, 129), (2000, 100)])
def test_absurd_aspect_ratios_are_refused(size: tuple[int, int]) -> None:
    message = refusal(encode(solid("white", size), "PNG"))

    assert "8:1" in message
    assert "crop" in message


# --------------------------------------------------------------------------- header size


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True, "exif": Image.Exif()}),
        ("GIF", {}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
    ],
)
def test_image_size_reads_the_header(fmt: str, params: dict[str, Any]) -> None:
    assert images.image_size(encode(solid(RED, (123, 45)), fmt, **params)) == (123, 45)


def test_image_size_of_a_transparent_webp() -> None:
    assert images.image_size(encode(solid((0, 0, 0, 0), (77, 33), "RGBA"), "WEBP")) == (77, 33)


def test_image_size_reports_a_bombs_claimed_size_without_decoding(no_decoding: None) -> None:
    assert images.image_size(png_claiming(50_000, 40_000)) == (50_000, 40_000)


@pytest.mark.parametrize("data", [b"not an image at all", PNG_SIGNATURE + b"\x00\x00"])
def test_image_size_refuses_what_it_cannot_read(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        images.image_size(data)


# --------------------------------------------------------------------------- grid


COLOURS = [RED, (0, 255, 0), BLUE, (255, 255, 255)]


def cells(count: int, size: tuple[int, int] = (100, 80)) -> list[bytes]:
    return [encode(solid(colour, size), "PNG") for colour in COLOURS[:count]]


def test_a_grid_of_one_is_the_image_itself() -> None:
    grid = images.make_grid(cells(1))

    assert grid.size == (100, 80)
    assert grid.mode == "RGB"
    assert grid.getpixel((50, 40)) == RED


def test_a_grid_of_two_is_side_by_side_with_a_transparent_gutter() -> None:
    grid = images.make_grid(cells(2), gutter=8)

    assert grid.size == (208, 80)
    assert grid.getpixel((50, 40)) == (*RED, 255)
    assert grid.getpixel((158, 40)) == (0, 255, 0, 255)
    assert grid.getpixel((104, 40))[3] == 0  # type: ignore[index]


def test_a_grid_of_three_leaves_the_fourth_cell_empty() -> None:
    grid = images.make_grid(cells(3), gutter=8)

    assert grid.size == (208, 168)
    assert grid.getpixel((50, 128)) == (*BLUE, 255)
    assert grid.getpixel((158, 128))[3] == 0  # type: ignore[index]


def test_a_grid_of_four_is_two_by_two() -> None:
    grid = images.make_grid(cells(4), gutter=8)

    assert grid.size == (208, 168)
    assert [grid.getpixel(point) for point in [(50, 40), (158, 40), (50, 128), (158, 128)]] == [
        (*colour, 255) for colour in COLOURS
    ]


def test_an_opaque_background_gives_an_opaque_grid() -> None:
    grid = images.make_grid(cells(2), background=(20, 20, 20, 255))

    assert grid.mode == "RGB"
    assert grid.getpixel((104, 40)) == (20, 20, 20)


@pytest.mark.parametrize("max_side", [512, 2048])
def test_a_grid_never_exceeds_its_max_side(max_side: int) -> None:
    grid = images.make_grid(cells(4, (1024, 1024)), max_side=max_side)

    assert max(grid.size) <= max_side
    assert max(grid.size) > max_side - 4
    assert grid.width == grid.height


@pytest.mark.parametrize("count", [0, 5])
def test_a_grid_needs_one_to_four_images(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 4"):
        images.make_grid([encode(solid(RED), "PNG")] * count)


# --------------------------------------------------------------------------- encode_to_fit


def test_a_noisy_image_is_reduced_to_fit_the_limit() -> None:
    result = images.encode_to_fit(noise(2048, 2048), fmt="png", limit_bytes=MiB)

    assert len(result.data) <= MiB
    assert result.reduced
    assert "1 MiB" in result.note
    assert result.note.endswith("upload limit.")
    decoded = decode(result.data)
    assert decoded.size == (result.width, result.height)
    assert decoded.format == result.fmt.upper()
    assert result.fmt == "jpeg"
    assert result.filename_ext == "jpg"


def test_a_small_image_is_left_alone() -> None:
    data = encode(solid(RED), "PNG")

    result = images.encode_to_fit(data, fmt="png", limit_bytes=10 * MiB)

    assert result.data == data
    assert (result.fmt, result.filename_ext, result.width, result.height) == ("png", "png", 64, 48)
    assert not result.reduced
    assert result.note == ""


def test_a_small_image_object_is_encoded_in_the_requested_format() -> None:
    result = images.encode_to_fit(solid(RED), fmt="webp", limit_bytes=10 * MiB)

    assert (result.fmt, result.filename_ext, result.reduced, result.note) == ("webp", "webp", False, "")
    assert decode(result.data).format == "WEBP"


def test_a_lossy_image_slightly_too_big_only_loses_quality() -> None:
    image = noise(512, 512)
    limit = int(len(encode(image, "JPEG", quality=95)) * 0.8)

    result = images.encode_to_fit(image, fmt="jpeg", limit_bytes=limit)

    assert len(result.data) <= limit
    assert (result.width, result.height) == (512, 512)
    assert result.reduced
    assert "quality" in result.note
    assert "downscaled" not in result.note.lower()


def test_a_transparent_png_too_big_becomes_webp_with_its_alpha() -> None:
    image = noise(512, 512, "RGBA")
    image.putalpha(255)
    image.paste((0, 0, 0, 0), (0, 0, 256, 512))
    limit = len(encode(image, "PNG")) // 2

    result = images.encode_to_fit(image, fmt="png", limit_bytes=limit)

    assert len(result.data) <= limit
    assert result.fmt == "webp"
    assert "WebP" in result.note
    decoded = decode(result.data)
    assert decoded.mode == "RGBA"
    assert decoded.getpixel((10, 10))[3] == 0  # type: ignore[index]
    assert decoded.getpixel((400, 10))[3] == 255  # type: ignore[index]


def test_jpeg_flattens_transparency_onto_white() -> None:
    result = images.encode_to_fit(
        solid((0, 0, 0, 0), mode="RGBA").convert("RGBA"), fmt="jpeg", limit_bytes=MiB
    )

    pixel = decode(result.data).getpixel((5, 5))
    assert close_to(pixel, (255, 255, 255))  # type: ignore[arg-type]


def test_an_impossible_limit_fails_with_a_member_safe_message() -> None:
    with pytest.raises(RenderFailed, match="upload limit"):
        images.encode_to_fit(noise(512, 512), fmt="jpeg", limit_bytes=200)


def test_an_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="fmt"):
        images.encode_to_fit(solid(RED), fmt="gif", limit_bytes=MiB)


def test_compose_result_sends_one_image_as_is_and_several_as_a_grid() -> None:
    single = encode(solid(RED), "PNG")
    assert images.compose_result([single], "png", 10 * MiB).as_file().read() == single

    grid = images.compose_result(cells(4), "webp", 10 * MiB)
    assert (grid.width, grid.height, grid.filename_ext) == (208, 168, "webp")


def test_sniff_extension_names_renderer_output() -> None:
    assert images.sniff_extension(encode(solid(RED), "JPEG")) == "jpg"
    assert images.sniff_extension(encode(solid(RED), "WEBP")) == "webp"
    with pytest.raises(RenderFailed):
        images.sniff_extension(b"<html>502 Bad Gateway</html>")


# --------------------------------------------------------------------------- resizing and alpha


def test_upscale_doubles_the_size_and_keeps_alpha() -> None:
    image = solid((200, 40, 40, 255), (40, 30), "RGBA")
    image.paste((0, 0, 0, 0), (0, 0, 20, 30))

    result = decode(images.upscale_lanczos(encode(image, "PNG")))

    assert result.size == (80, 60)
    assert result.mode == "RGBA"
    assert result.getpixel((5, 30))[3] == 0  # type: ignore[index]
    assert close_to(result.getpixel((70, 30)), (200, 40, 40, 255), 4)  # type: ignore[arg-type]


def test_upscale_refuses_results_over_the_pixel_cap() -> None:
    with pytest.raises(InvalidInput, match="200×200"):
        images.upscale_lanczos(encode(solid(RED, (100, 100)), "PNG"), max_pixels=150 * 150)


def test_thumbnail_is_a_small_webp_keeping_the_aspect_ratio() -> None:
    data = images.thumbnail(encode(noise(1000, 500), "PNG"), 200)

    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"
    assert images.image_size(data) == (200, 100)


def test_thumbnail_can_be_png_and_keeps_alpha() -> None:
    data = images.thumbnail(encode(solid((0, 0, 0, 0), (300, 300), "RGBA"), "PNG"), 64, fmt="png")

    result = decode(data)
    assert result.size == (64, 64)
    assert result.getpixel((3, 3))[3] == 0  # type: ignore[index]


# --------------------------------------------------------------------------- podium

GREEN = (0, 255, 0)
# The rank colours a member sees: gold, silver, bronze.
GOLD = (241, 196, 15)
SILVER = (192, 192, 192)
BRONZE = (205, 127, 50)
PODIUM_HEIGHT = 512
RUNNER_UP_HEIGHT = 435  # 85 % of the winner's height


def entries(*specs: tuple[tuple[int, int, int], tuple[int, int]]) -> list[bytes]:
    return [encode(solid(colour, size), "PNG") for colour, size in specs]


def box_of(image: Image.Image, colour: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    """Return the bounding box of the pixels within a few levels of ``colour``, or None."""
    difference = ImageChops.difference(image.convert("RGB"), Image.new("RGB", image.size, colour))
    red, green, blue = difference.split()
    farthest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    return farthest.point(lambda value: 255 if value <= 4 else 0).getbbox()


def podium_image(result: images.Encoded) -> Image.Image:
    image = decode(result.data)
    assert image.size == (result.width, result.height)
    return image


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_a_podium_of_one_two_or_three_grows_wider_but_not_taller(fmt: str) -> None:
    square = [(RED, (64, 64)), (GREEN, (64, 64)), (BLUE, (64, 64))]
    results = [
        images.podium(entries(*square[:count]), labels=["name"] * count, fmt=fmt, limit_bytes=8 * MiB)
        for count in (1, 2, 3)
    ]

    assert [result.fmt for result in results] == [fmt] * 3
    assert not any(result.reduced for result in results)
    assert results[0].width < results[1].width < results[2].width <= 3 * 768
    assert len({result.height for result in results}) == 1
    assert all(podium_image(result).mode == "RGB" for result in results)


def test_each_entry_keeps_its_aspect_ratio_and_the_winner_stands_in_the_middle() -> None:
    data = entries((RED, (200, 100)), (GREEN, (100, 200)), (BLUE, (150, 100)))

    image = podium_image(images.podium(data, labels=["", "", ""], fmt="png", limit_bytes=8 * MiB))

    boxes = [box_of(image, colour) for colour in (RED, GREEN, BLUE)]
    assert None not in boxes
    sizes = [(right - left, bottom - top) for left, top, right, bottom in boxes]  # type: ignore[misc]
    expected = [(1024, PODIUM_HEIGHT), (218, RUNNER_UP_HEIGHT), (652, RUNNER_UP_HEIGHT)]
    for (width, height), (expected_width, expected_height) in zip(sizes, expected, strict=True):
        assert abs(width - expected_width) <= 1
        assert abs(height - expected_height) <= 1
    lefts = [box[0] for box in boxes]  # type: ignore[index]
    # Classic podium order, left to right: 2nd, 1st, 3rd; all standing on one baseline.
    assert lefts[1] < lefts[0] < lefts[2]
    assert len({box[3] for box in boxes}) == 1  # type: ignore[index]


def test_two_entries_stand_winner_first() -> None:
    data = entries((RED, (64, 64)), (GREEN, (64, 64)))

    image = podium_image(images.podium(data, labels=["a", "b"], fmt="png", limit_bytes=8 * MiB))

    red, green = box_of(image, RED), box_of(image, GREEN)
    assert red is not None
    assert green is not None
    assert red[0] < green[0]


def test_each_entry_wears_its_rank_badge_in_its_top_left_corner() -> None:
    data = entries((RED, (64, 64)), (GREEN, (64, 64)), (BLUE, (64, 64)))

    image = podium_image(images.podium(data, labels=["", "", ""], fmt="png", limit_bytes=8 * MiB))

    for entry, badge in [(RED, GOLD), (GREEN, SILVER), (BLUE, BRONZE)]:
        entry_box = box_of(image, entry)
        assert entry_box is not None
        # Cropped to the entry itself: the rank-coloured step under it is outside.
        picture = image.crop(entry_box)
        badge_box = box_of(picture, badge)
        assert badge_box is not None, f"no {badge} badge on the {entry} entry"
        left, top, right, bottom = badge_box
        assert right < picture.width / 2
        assert bottom < picture.height / 4
        assert (right - left) * (bottom - top) > 1000


def test_a_lone_winner_has_only_a_gold_badge() -> None:
    image = podium_image(
        images.podium(entries((BLUE, (64, 64))), labels=[""], fmt="png", limit_bytes=8 * MiB)
    )

    assert box_of(image, GOLD) is not None
    assert box_of(image, SILVER) is None
    assert box_of(image, BRONZE) is None


def test_labels_are_drawn_under_the_entries() -> None:
    data = entries((RED, (64, 64)), (GREEN, (64, 64)))

    def draw(*labels: str) -> images.Encoded:
        return images.podium(data, labels=labels, fmt="png", limit_bytes=8 * MiB)

    alice, bob, unlabelled = draw("Alice", "Entry 2"), draw("Bob", "Entry 2"), draw("", "")

    assert alice.data != bob.data
    assert (alice.width, alice.height) == (bob.width, bob.height)
    # Without any label the band under the entries is left out.
    assert unlabelled.height < alice.height
    assert unlabelled.width == alice.width


def test_labels_are_folded_to_what_the_built_in_font_can_draw() -> None:
    data = entries((RED, (64, 64)))

    def draw(label: str) -> bytes:
        return images.podium(data, labels=[label], fmt="png", limit_bytes=8 * MiB).data

    assert draw("Zoë 🎨") == draw("Zoe")
    assert draw("李小龙") == draw("?")
    assert draw("🎨") == draw("?")
    assert draw("A\nvery " + "long " * 40 + "name") != draw("Zoe")


def test_a_podium_too_big_for_the_upload_limit_is_reduced_and_says_so() -> None:
    data = [encode(noise(256, 256, seed=seed), "PNG") for seed in range(3)]

    result = images.podium(data, labels=["a", "b", "c"], fmt="png", limit_bytes=200 * 2**10)

    assert len(result.data) <= 200 * 2**10
    assert result.reduced
    assert "200 KiB" in result.note
    podium_image(result)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_transparent_entries_are_flattened_onto_white(fmt: str) -> None:
    clear = solid((0, 0, 0, 0), (64, 64), "RGBA")
    clear.paste((255, 0, 0, 255), (0, 32, 64, 64))

    result = images.podium([encode(clear, "PNG")], labels=["see-through"], fmt=fmt, limit_bytes=8 * MiB)

    image = podium_image(result)
    assert image.mode == "RGB"
    red = box_of(image, RED)
    assert red is not None
    # The transparent upper half sits just above the red lower half, and is white.
    assert close_to(image.getpixel(((red[0] + red[2]) // 2, red[1] - 64)), (255, 255, 255))  # type: ignore[arg-type]


def test_very_wide_entries_shrink_together_to_the_width_cap() -> None:
    data = entries((RED, (800, 100)), (GREEN, (800, 100)), (BLUE, (800, 100)))

    result = images.podium(data, labels=["a", "b", "c"], fmt="png", limit_bytes=8 * MiB)

    # One pixel of height is worth about 20 of width here, so the cap is met to within that.
    assert 3 * 768 * 0.95 <= result.width <= 3 * 768
    image = podium_image(result)
    red, green = box_of(image, RED), box_of(image, GREEN)
    assert red is not None
    assert green is not None
    assert abs((red[2] - red[0]) / (red[3] - red[1]) - 8) < 0.1
    assert red[3] - red[1] > green[3] - green[1]


@pytest.mark.parametrize(
    ("count", "labels", "message"), [(0, 0, "1 to 3"), (4, 4, "1 to 3"), (2, 1, "label")]
)
def test_a_podium_needs_one_to_three_entries_with_a_label_each(count: int, labels: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        images.podium(entries(*[(RED, (64, 64))] * count), labels=["x"] * labels, fmt="png", limit_bytes=MiB)
