"""Decode, validate, compose and encode images: the one place Easel touches pixels.

Every function here is synchronous and CPU-bound; callers run them with
``asyncio.to_thread`` so the event loop never blocks on Pillow.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import struct
import unicodedata
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Final

from PIL import Image, ImageCms, ImageDraw, ImageFilter, ImageFont, ImageOps, PngImagePlugin

from bot.errors import InvalidInput, RenderFailed

__all__ = [
    "ACCEPTED_FORMATS",
    "MAX_ASPECT",
    "MIN_SIDE",
    "Encoded",
    "SourceImage",
    "compose_result",
    "drawable_line",
    "encode_png",
    "encode_to_fit",
    "image_size",
    "make_grid",
    "open_rgb",
    "podium",
    "preview",
    "sniff_extension",
    "thumbnail",
    "upscale_lanczos",
    "validate_upload",
]

ACCEPTED_FORMATS: Final = ("png", "jpeg", "webp", "gif")
MIN_SIDE: Final = 16
MAX_ASPECT: Final = 8

# Only these Pillow plugins may ever parse bytes: an unrestricted Image.open would also try
# EPS (Ghostscript), TIFF, PSD and dozens more decoders on member-supplied data.
_PILLOW_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF")
_ACCEPTED_TEXT: Final = "PNG, JPEG, WebP or GIF"
_DISPLAY_NAME: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "gif": "GIF"}
_EXTENSION: Final = {"png": "png", "jpeg": "jpg", "webp": "webp"}

_QUALITIES: Final = (95, 85, 75, 65)
# Size at quality q relative to quality 95, typical of measurements on noisy and photographic
# content; it only picks which encode to try first, the real size always decides.
_QUALITY_SIZE: Final = {
    "jpeg": {95: 1.0, 85: 0.55, 75: 0.42, 65: 0.36},
    "webp": {95: 1.0, 85: 0.65, 75: 0.5, 65: 0.45},
}
_SCALE_STEP: Final = 0.75
# Encoded size roughly follows pixel area when downscaling (measured 0.8-1.4 power of it).
_PER_STEP: Final = _SCALE_STEP**2
_FIT_MARGIN: Final = 0.95
_MIN_ENCODE_SIDE: Final = 256


@dataclass(frozen=True)
class SourceImage:
    """A validated upload, normalised to RGB or RGBA and re-encoded as PNG."""

    png: bytes = field(repr=False)
    width: int
    height: int
    has_alpha: bool
    format: str


@dataclass(frozen=True)
class Encoded:
    """Image bytes ready to attach to a Discord message, plus what the result message should say."""

    data: bytes = field(repr=False)
    fmt: str
    filename_ext: str
    width: int
    height: int
    reduced: bool
    note: str

    def as_file(self) -> io.BytesIO:
        """Return the bytes as a fresh file object (``discord.File`` consumes one per upload)."""
        return io.BytesIO(self.data)


# --------------------------------------------------------------------------- validation


def validate_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> SourceImage:
    """Check an uploaded file by its content and return it normalised as PNG.

    Raises InvalidInput, with a message for the member, if the file is empty, too big, not a
    PNG/JPEG/WebP/GIF image, damaged, has too many pixels or has absurd dimensions. Animated
    GIF, WebP and APNG files contribute their first frame.
    """
    if not data:
        raise InvalidInput(f"That file is empty. Please upload a {_ACCEPTED_TEXT} image.")
    if len(data) > max_bytes:
        size_text, limit_text = _megabytes(len(data)), _megabytes(max_bytes)
        over = (
            f"just over the {limit_text}"
            if size_text == limit_text
            else f"{size_text}, over the {limit_text}"
        )
        raise InvalidInput(f"That file is {over} limit for uploads. Please upload a smaller image.")
    fmt = _sniff(data)
    if fmt is None:
        raise InvalidInput(_unsupported_message(data))
    size = _header_size(data, fmt)
    if size is None:
        raise InvalidInput(_damaged_message(fmt))
    # The header's dimensions are checked before Pillow sees the file: even opening a WebP makes
    # libwebp allocate the whole canvas, and decoding a bomb would allocate gigabytes.
    _check_dimensions(*size, max_pixels=max_pixels)

    with warnings.catch_warnings():
        # Pillow's own bomb guard only warns below its hard limit; make that a refusal too. The
        # filter is process-wide while this block runs (not thread-safe before Python 3.14), which
        # is acceptable only because it is a second fence: the header check above is the real one.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS)
            # A GIF's first frame may be larger than its declared screen: Pillow grows the image
            # to fit it while opening, so check again before any pixel is decoded.
            _check_dimensions(*opened.size, max_pixels=max_pixels)
            opened.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            # Pillow measured something bigger than the header said (say, a GIF frame): the
            # header's dimensions would be misleading here.
            raise InvalidInput(_too_many_pixels_message(None, max_pixels=max_pixels)) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
            # Pillow reports broken files through all of these, depending on the plugin and the damage.
            raise InvalidInput(_damaged_message(fmt)) from exc
    with opened:
        image = _normalise(opened)

    return SourceImage(
        png=_encode_png(image),
        width=image.width,
        height=image.height,
        has_alpha=image.mode == "RGBA",
        format=fmt,
    )


def image_size(data: bytes) -> tuple[int, int]:
    """Return ``(width, height)`` of a PNG, JPEG, WebP or GIF, reading only its header.

    Decodes no pixels and ignores Pillow's bomb limit, so it works on any claimed size.
    Raises InvalidInput if the data is not one of those formats or its header is broken.
    """
    fmt = _sniff(data)
    if fmt is None:
        raise InvalidInput(_unsupported_message(data))
    size = _header_size(data, fmt)
    if size is None:
        raise InvalidInput(_damaged_message(fmt))
    return size


def _check_dimensions(width: int, height: int, *, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidInput(_too_many_pixels_message((width, height), max_pixels=max_pixels))
    if min(width, height) < MIN_SIDE:
        raise InvalidInput(
            f"That image is only {width}×{height} pixels; each side must be at least {MIN_SIDE} "
            "pixels. Please upload a larger image."
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        ratio = max(width, height) / min(width, height)
        raise InvalidInput(
            f"That image is {width}×{height} pixels, which is too long and thin ({ratio:.1f}:1); "
            f"the most Easel accepts is {MAX_ASPECT}:1. Please crop it closer to square and upload it again."
        )


def _too_many_pixels_message(size: tuple[int, int] | None, *, max_pixels: int) -> str:
    side = math.isqrt(max_pixels)
    limit = f"the most Easel accepts is {_megapixels(max_pixels)} (about {side}×{side})"
    if size is None:
        return (
            f"That image has more pixels than Easel accepts: {limit}. Please resize it and upload it again."
        )
    width, height = size
    return (
        f"That image is {width}×{height} pixels ({_megapixels(width * height)}); {limit}. "
        "Please resize it and upload it again."
    )


def _damaged_message(fmt: str) -> str:
    return (
        f"That {_DISPLAY_NAME[fmt]} file looks damaged or incomplete, so Easel can't read it. "
        "Please re-save or re-export it and upload it again."
    )


def _unsupported_message(data: bytes) -> str:
    other = _other_format(data)
    if other is not None:
        return (
            f"That file is a {other} image, which Easel can't read. "
            f"Please convert it to {_ACCEPTED_TEXT} and upload it again."
        )
    return f"That file isn't an image Easel can read. Please upload a {_ACCEPTED_TEXT} image."


# --------------------------------------------------------------------------- header parsing


def _sniff(data: bytes) -> str | None:
    """Name the accepted format that ``data`` starts with, judged by its magic bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _other_format(data: bytes) -> str | None:
    """Name a common image format Easel refuses, so the member knows what to convert."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "HEIC"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if b"<svg" in data[:1024].lower():
        return "SVG"
    return None


def _header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Read the dimensions a file claims, or None if its header is broken."""
    size: tuple[int, int] | None
    if fmt == "png":
        size = _png_size(data)
    elif fmt == "gif":
        size = _gif_size(data)
    elif fmt == "webp":
        size = _webp_size(data)
    else:
        size = _jpeg_size(data)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _gif_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 10:
        return None
    return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return (
            int.from_bytes(data[26:28], "little") & 0x3FFF,
            int.from_bytes(data[28:30], "little") & 0x3FFF,
        )
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    end = len(data)
    while pos < end:
        if data[pos] != 0xFF:
            return None
        while pos < end and data[pos] == 0xFF:
            pos += 1
        if pos >= end:
            return None
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue
        if marker in (0xD9, 0xDA) or pos + 2 > end:
            return None
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if pos + 7 > end:
                return None
            return int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(
                data[pos + 3 : pos + 5], "big"
            )
        pos += length
    return None


# --------------------------------------------------------------------------- normalisation


def _normalise(image: Image.Image) -> Image.Image:
    """Return a loaded image as sRGB ``RGB`` or ``RGBA``, upright, without metadata."""
    image = _to_srgb(image)
    # Malformed EXIF is common in edited photos; an unrotated image beats a refusal.
    with contextlib.suppress(ValueError, TypeError, KeyError, OSError, SyntaxError):
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Pillow's I;16 -> L conversion clips at 255, turning 16-bit greys white; scale instead.
        image = image.convert("I").point(_LUT_16_TO_8, "L")
        image.info.pop("transparency", None)
        mode = "L"
    if mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        alpha_low, _ = image.getchannel("A").getextrema()
        if alpha_low == 255:
            # Fully opaque alpha is dead weight: keep has_alpha meaningful for backends that
            # reject transparency.
            image = image.convert("RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
    else:
        image = image.copy()
    # Stale ICC/EXIF would make encoders re-embed a profile that no longer describes the pixels.
    image.info = {}
    return image


_LUT_16_TO_8: Final = [value >> 8 for value in range(65536)]


_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(image: Image.Image) -> Image.Image:
    """Convert pixels tagged with an ICC profile (Display P3 photos, CMYK prints) to sRGB."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(image, profile, _SRGB, outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or exotic profile is not worth refusing the upload over: use the raw values.
        return image
    if converted is None:
        return image
    converted.info = {key: value for key, value in image.info.items() if key != "icc_profile"}
    return converted


# --------------------------------------------------------------------------- composition


def make_grid(
    images: Sequence[bytes],
    *,
    max_side: int = 2048,
    gutter: int = 8,
    background: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> Image.Image:
    """Compose 1-4 images into one preview grid and return it as a Pillow image.

    Layouts: 1 image as is, 2 side by side, 3 or 4 in a 2x2 grid (the fourth cell of three is
    left as ``background``). Cells keep the originals' resolution unless the grid's long side
    would exceed ``max_side``, in which case they are scaled down together; ``gutter`` pixels of
    ``background`` separate cells. The result is an image rather than bytes so it can go
    straight to ``encode_to_fit`` without a PNG round trip; it is ``RGBA`` when any input or the
    (transparent by default) background has transparency, else ``RGB``.
    """
    if not 1 <= len(images) <= 4:
        raise ValueError(f"make_grid takes 1 to 4 images, got {len(images)}")
    if gutter < 0 or max_side < 64 + gutter:
        raise ValueError(f"make_grid needs max_side >= 64 + gutter, got {max_side} and {gutter}")
    cells = [_normalise(_decode(data)) for data in images]
    cols = 1 if len(cells) == 1 else 2
    rows = 1 if len(cells) <= 2 else 2
    gutter = gutter if len(cells) > 1 else 0
    cell_w = max(cell.width for cell in cells)
    cell_h = max(cell.height for cell in cells)
    scale = min(
        1.0,
        (max_side - (cols - 1) * gutter) / (cols * cell_w),
        (max_side - (rows - 1) * gutter) / (rows * cell_h),
    )
    cell_w = max(1, math.floor(cell_w * scale))
    cell_h = max(1, math.floor(cell_h * scale))

    transparent = any(cell.mode == "RGBA" for cell in cells) or (background[3] < 255 and len(cells) > 1)
    mode = "RGBA" if transparent else "RGB"
    fill = background if transparent else background[:3]
    grid = Image.new(mode, (cols * cell_w + (cols - 1) * gutter, rows * cell_h + (rows - 1) * gutter), fill)
    for index, cell in enumerate(cells):
        fit = min(scale, cell_w / cell.width, cell_h / cell.height)
        size = (max(1, round(cell.width * fit)), max(1, round(cell.height * fit)))
        if size != cell.size:
            cell = cell.resize(size, Image.Resampling.LANCZOS)
        left = (index % cols) * (cell_w + gutter) + (cell_w - cell.width) // 2
        top = (index // cols) * (cell_h + gutter) + (cell_h - cell.height) // 2
        grid.paste(cell.convert(mode), (left, top))
    return grid


# --------------------------------------------------------------------------- encoding


def encode_to_fit(image: Image.Image | bytes, *, fmt: str, limit_bytes: int) -> Encoded:
    """Encode an image as ``fmt`` ("png", "jpeg" or "webp") in at most ``limit_bytes`` bytes.

    Tries ``fmt`` first (lossy formats at quality 95). If that is too big: lossy formats step
    their quality down 95→85→75→65; PNG switches to JPEG, or to WebP when the image has
    transparency (JPEG cannot carry alpha). If the lowest quality is still too big the image is
    downscaled in 0.75x steps (LANCZOS), jumping straight to the step the first oversized result
    predicts, until it fits. Asking for JPEG flattens transparency onto white.

    Encoded bytes that are already ``fmt`` and small enough are returned untouched. Raises
    RenderFailed if even a 256 px version does not fit.
    """
    fmt = fmt.lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in _EXTENSION:
        raise ValueError(f"fmt must be 'png', 'jpeg' or 'webp', got {fmt!r}")
    if limit_bytes <= 0:
        raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")

    if isinstance(image, bytes):
        if _sniff(image) == fmt and len(image) <= limit_bytes:
            size = _header_size(image, fmt)
            if size is not None:
                return Encoded(image, fmt, _EXTENSION[fmt], size[0], size[1], reduced=False, note="")
        image = _decode(image)
    image = _normalise(image)
    if fmt == "jpeg" and image.mode == "RGBA":
        image = _flatten(image, (255, 255, 255))
    original_size = image.size

    data = _encode(image, fmt, _QUALITIES[0])
    if len(data) <= limit_bytes:
        return Encoded(data, fmt, _EXTENSION[fmt], image.width, image.height, reduced=False, note="")

    out_fmt = fmt
    quality = _QUALITIES[0]
    if fmt == "png":
        out_fmt = "webp" if image.mode == "RGBA" else "jpeg"
        data = _encode(image, out_fmt, quality)

    # Step quality down, skipping steps the size model says cannot fit.
    ratios = _QUALITY_SIZE[out_fmt]
    lower = [q for q in _QUALITIES if q < quality]
    while len(data) > limit_bytes and lower:
        predicted = {q: len(data) * ratios[q] / ratios[quality] for q in lower}
        fitting = [q for q in lower if predicted[q] <= limit_bytes * _FIT_MARGIN]
        if not fitting:
            # Even the lowest quality will not fit at full size: skip the doomed encodes and
            # let the predicted size pick the downscale.
            quality = lower[-1]
            return _downscale_to_fit(
                image, out_fmt, quality, round(predicted[quality]), limit_bytes, fmt, original_size
            )
        quality = fitting[0]
        data = _encode(image, out_fmt, quality)
        lower = [q for q in lower if q < quality]

    if len(data) <= limit_bytes:
        note = _note(fmt, out_fmt, quality, original_size, image.size, limit_bytes)
        return Encoded(data, out_fmt, _EXTENSION[out_fmt], image.width, image.height, reduced=True, note=note)
    return _downscale_to_fit(image, out_fmt, quality, len(data), limit_bytes, fmt, original_size)


def compose_result(images: Sequence[bytes], fmt: str, limit_bytes: int, *, max_side: int = 2048) -> Encoded:
    """Turn a job's 1-4 result images into the one attachment its result message shows.

    A single image is sent at full resolution (as is, when it already is ``fmt`` and fits);
    several become a ``make_grid`` preview no larger than ``max_side``.
    """
    if len(images) == 1:
        return encode_to_fit(images[0], fmt=fmt, limit_bytes=limit_bytes)
    return encode_to_fit(make_grid(images, max_side=max_side), fmt=fmt, limit_bytes=limit_bytes)


def sniff_extension(data: bytes) -> str:
    """Return the file extension ("png", "jpg", "webp", "gif") for a renderer's image bytes.

    Raises RenderFailed if the bytes are not an image format Easel stores.
    """
    fmt = _sniff(data)
    if fmt is None:
        raise RenderFailed("The backend returned something that isn't a PNG, JPEG, WebP or GIF image.")
    return _EXTENSION.get(fmt, fmt)


def _downscale_to_fit(
    image: Image.Image,
    fmt: str,
    quality: int,
    full_size_bytes: int,
    limit_bytes: int,
    requested_fmt: str,
    original_size: tuple[int, int],
) -> Encoded:
    """Shrink ``image`` in 0.75x steps until its encoding fits, predicting how many steps to take."""
    long_side = max(image.size)
    # Negative when the image is already at or below the floor: then nothing is tried.
    max_steps = math.floor(math.log(_MIN_ENCODE_SIDE / long_side) / math.log(_SCALE_STEP))

    def attempt(steps: int) -> Encoded:
        factor = _SCALE_STEP**steps
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        data = _encode(image.resize(size, Image.Resampling.LANCZOS), fmt, quality)
        note = _note(requested_fmt, fmt, quality, original_size, size, limit_bytes)
        return Encoded(data, fmt, _EXTENSION[fmt], size[0], size[1], reduced=True, note=note)

    failed_steps = 0
    steps = min(max_steps, _steps_needed(full_size_bytes, limit_bytes))
    while steps > failed_steps:
        encoded = attempt(steps)
        if len(encoded.data) <= limit_bytes:
            # The size model is deliberately simple; when the result came out far below the limit,
            # one step larger probably fits too and looks noticeably better.
            if steps - 1 > failed_steps and len(encoded.data) / _PER_STEP <= limit_bytes * _FIT_MARGIN:
                larger = attempt(steps - 1)
                if len(larger.data) <= limit_bytes:
                    return larger
            return encoded
        failed_steps = steps
        steps = min(max_steps, steps + _steps_needed(len(encoded.data), limit_bytes))
    raise RenderFailed(
        f"Easel couldn't make this image small enough for Discord's {_mebibytes(limit_bytes)} upload "
        "limit, even at a much lower resolution. Please try a smaller size.",
        retryable=False,
    )


def _steps_needed(size_bytes: int, limit_bytes: int) -> int:
    """Return how many more 0.75x steps should bring ``size_bytes`` under the limit (at least 1)."""
    target = limit_bytes * _FIT_MARGIN
    return max(1, math.ceil(math.log(target / size_bytes) / math.log(_PER_STEP)))


def _note(
    requested_fmt: str,
    fmt: str,
    quality: int,
    original_size: tuple[int, int],
    size: tuple[int, int],
    limit_bytes: int,
) -> str:
    name = _DISPLAY_NAME[fmt]
    parts: list[str] = []
    if fmt != requested_fmt:
        parts.append(f"Re-encoded as {name} (quality {quality})")
    elif quality != _QUALITIES[0]:
        parts.append(f"Saved as {name} at quality {quality}")
    if size != original_size:
        parts.append(f"downscaled to {size[0]}×{size[1]}" if parts else f"Downscaled to {size[0]}×{size[1]}")
    return f"{' and '.join(parts)} to fit Discord's {_mebibytes(limit_bytes)} upload limit."


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    if fmt == "png":
        return _encode_png(image)
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "WEBP", quality=quality)
    return buffer.getvalue()


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- resizing


def upscale_lanczos(png: bytes, factor: int = 2, *, max_pixels: int = 4096 * 4096) -> bytes:
    """Enlarge an image ``factor`` times and return it as PNG, keeping transparency.

    LANCZOS is the sharpest of Pillow's filters but still softens edges when enlarging, so a
    mild UnsharpMask (radius scaled to the factor, 60 %, threshold 2) restores edge contrast
    without haloing flat areas; only colour is sharpened, never the alpha channel. Raises
    InvalidInput if the result would exceed ``max_pixels``.
    """
    if factor < 2:
        raise ValueError(f"factor must be at least 2, got {factor}")
    width, height = image_size(png)
    new_w, new_h = width * factor, height * factor
    if new_w * new_h > max_pixels:
        side = math.isqrt(max_pixels)
        raise InvalidInput(
            f"Upscaling this {width}×{height} image {factor}× would make it {new_w}×{new_h}, above "
            f"Easel's limit of {_megapixels(max_pixels)} (about {side}×{side}). "
            "Please upscale a smaller image."
        )
    image = _normalise(_decode(png))
    enlarged = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    sharpen = ImageFilter.UnsharpMask(radius=0.5 * factor, percent=60, threshold=2)
    if enlarged.mode == "RGBA":
        sharpened = enlarged.convert("RGB").filter(sharpen)
        sharpened.putalpha(enlarged.getchannel("A"))
    else:
        sharpened = enlarged.filter(sharpen)
    return _encode_png(sharpened)


def thumbnail(png: bytes, max_side: int, *, fmt: str = "webp") -> bytes:
    """Return a small preview whose long side is at most ``max_side``, as WebP (default) or PNG.

    WebP keeps previews a fraction of PNG's size, which matters when a progress message is
    edited every few seconds; it keeps transparency, and Discord displays it inline.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    if fmt not in ("webp", "png"):
        raise ValueError(f"thumbnail fmt must be 'webp' or 'png', got {fmt!r}")
    image = _decode(png, load=False)
    # draft() lets the JPEG decoder downscale by 1/2 to 1/8 while decoding, far cheaper than resizing.
    image.draft(None, (max_side, max_side))
    image = _normalise(image)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if fmt == "png":
        return _encode_png(image)
    return _encode(image, "webp", 80)


def preview(image: Image.Image, side: int) -> bytes:
    """Enlarge a tiny in-progress picture (a latent projection) to ``side`` pixels as a WebP preview."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return _encode(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), "webp", 80)


def encode_png(image: Image.Image, *, parameters: str = "") -> bytes:
    """Encode a rendered image losslessly; delivery re-encodes it for Discord.

    ``parameters`` goes into the PNG's ``parameters`` text chunk, where Stable Diffusion tools
    (A1111, ComfyUI, Civitai) look for the prompt and settings of an image.
    """
    if not parameters:
        return _encode_png(image)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def open_rgb(data: bytes) -> Image.Image:
    """Decode trusted bytes (a stored result or a validated upload) as an RGB image, alpha flattened."""
    image = _normalise(_decode(data))
    return _flatten(image, (255, 255, 255)) if image.mode == "RGBA" else image.convert("RGB")


# --------------------------------------------------------------------------- challenge results

# Discord's dark theme puts embeds on #2b2d31 (bot/charts.py uses it too), so the podium reads as
# a card in the channel; text is Discord's own light grey.
_PODIUM_BACKGROUND: Final = (43, 45, 49)
_PODIUM_TEXT: Final = (219, 222, 225)
_BADGE_TEXT: Final = (30, 31, 34)
# Gold, silver and bronze, for ranks 1, 2 and 3.
_RANK_COLOURS: Final = ((241, 196, 15), (192, 192, 192), (205, 127, 50))
_RANK_NAMES: Final = ("1st", "2nd", "3rd")
# Left-to-right order of the ranks (0-based) for 1, 2 and 3 entries: the classic podium puts the
# winner between second and third; two entries read naturally winner first.
_PODIUM_ORDER: Final = {1: (0,), 2: (0, 1), 3: (1, 0, 2)}
_PODIUM_HEIGHT: Final = 512
_PODIUM_MIN_HEIGHT: Final = 64
_PODIUM_MAX_WIDTH: Final = 3 * 768
_RUNNER_UP_SCALE: Final = 0.85
# Everything else is a fraction of the winner's height, so text keeps its size relative to the
# pictures when a wide podium is scaled down, and Discord's inline preview (about 550 px wide,
# a third of a typical podium) still shows readable badges and names.
_PAD: Final = 0.05
_GUTTER: Final = 0.04
_STEP: Final = 0.016
_LABEL_GAP: Final = 0.025
_LABEL_SIZE: Final = 0.07
_BADGE_SIZE: Final = 0.085
_BADGE_INSET: Final = 0.025
_MIN_COLUMN: Final = 0.5

# Pillow's built-in font covers printable ASCII, and labels are folded to what it can draw.
PRINTABLE_ASCII: Final = frozenset(chr(code) for code in range(0x20, 0x7F))
# Letters NFKD does not decompose into a base letter plus accents, and punctuation the font lacks.
_ASCII_FOLD: Final = str.maketrans(
    {
        "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
        "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
        "ı": "i", "–": "-", "—": "-", "−": "-", "×": "x", "‘": "'", "’": "'", "“": '"', "”": '"',
        "…": "...",
    }
)  # fmt: skip
_UNKNOWN_RUN: Final = re.compile(r"\?(?:\s*\?)+")


def podium(images: Sequence[bytes], *, labels: Sequence[str], fmt: str, limit_bytes: int) -> Encoded:
    """Compose a challenge's top 1-3 entries, given in rank order, into one results image.

    Layout: three entries stand as a classic podium, 2nd-1st-3rd from left to right; two stand
    1st-2nd; one stands alone. Every entry keeps its aspect ratio: the winner is 512 px tall and
    the others 85 % of that, bottom-aligned so the winner stands taller. The whole podium shrinks
    together if it would be wider than 2304 px. Each entry carries a rank badge ("1st", "2nd",
    "3rd" in gold, silver, bronze) in its top-left corner and a step in the same colour under it;
    under that, its label (``labels[i]`` for ``images[i]``, "" for none; folded to ASCII for the
    built-in font and shortened with "..." to its column). Columns are at least half the winner's
    height wide so badges and labels fit beside tall, narrow entries. Transparency is flattened
    onto white, so an entry's edges show on the dark card. The result goes through
    ``encode_to_fit``, so it respects ``limit_bytes`` and says how it was reduced.
    """
    if not 1 <= len(images) <= 3:
        raise ValueError(f"podium takes 1 to 3 images, got {len(images)}")
    if len(labels) != len(images):
        raise ValueError(f"podium needs one label per image, got {len(labels)} for {len(images)}")
    entries = [open_rgb(data) for data in images]
    texts = [drawable_line(label) for label in labels]
    order = _PODIUM_ORDER[len(entries)]

    height = _PODIUM_HEIGHT
    while True:
        sizes = [_entry_size(entries[rank], height, rank) for rank in order]
        width = _podium_width(sizes, height)
        if width <= _PODIUM_MAX_WIDTH or height <= _PODIUM_MIN_HEIGHT:
            break
        # Every dimension is proportional to the height, so one rescale nearly lands; rounding
        # may need a pixel or two more.
        height = max(_PODIUM_MIN_HEIGHT, min(height - 1, math.floor(height * _PODIUM_MAX_WIDTH / width)))

    pad, gutter = round(height * _PAD), round(height * _GUTTER)
    step = max(2, round(height * _STEP))
    label_font = ImageFont.load_default(size=max(10, round(height * _LABEL_SIZE)))
    badge_font = ImageFont.load_default(size=max(10, round(height * _BADGE_SIZE)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_height = (
        math.ceil(probe.textbbox((0, 0), "Hg", font=label_font, anchor="la")[3]) if any(texts) else 0
    )
    base = pad + height
    canvas_height = base + step + (round(height * _LABEL_GAP) + label_height if label_height else 0) + pad

    canvas = Image.new("RGB", (width, canvas_height), _PODIUM_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    column_left = pad
    for rank, size in zip(order, sizes, strict=True):
        column = _column_width(size, height)
        left = column_left + (column - size[0]) // 2
        top = base - size[1]
        entry = entries[rank]
        canvas.paste(
            entry if entry.size == size else entry.resize(size, Image.Resampling.LANCZOS), (left, top)
        )
        draw.rectangle([(left, base), (left + size[0] - 1, base + step - 1)], fill=_RANK_COLOURS[rank])
        _draw_badge(draw, (left, top, size[0]), rank, badge_font, height)
        if texts[rank]:
            text = _fit_text(draw, texts[rank], label_font, column)
            centre = column_left + column // 2
            y = base + step + round(height * _LABEL_GAP)
            draw.text((centre, y), text, font=label_font, fill=_PODIUM_TEXT, anchor="ma")
        column_left += column + gutter
    return encode_to_fit(canvas, fmt=fmt, limit_bytes=limit_bytes)


def _entry_size(entry: Image.Image, height: int, rank: int) -> tuple[int, int]:
    """Return the size an entry of ``rank`` (0-based) is drawn at on a podium ``height`` tall."""
    entry_height = height if rank == 0 else max(1, round(height * _RUNNER_UP_SCALE))
    return max(1, round(entry.width * entry_height / entry.height)), entry_height


def _column_width(size: tuple[int, int], height: int) -> int:
    return max(size[0], round(height * _MIN_COLUMN))


def _podium_width(sizes: Sequence[tuple[int, int]], height: int) -> int:
    columns = sum(_column_width(size, height) for size in sizes)
    return 2 * round(height * _PAD) + columns + (len(sizes) - 1) * round(height * _GUTTER)


def _draw_badge(
    draw: ImageDraw.ImageDraw,
    entry: tuple[int, int, int],
    rank: int,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    height: int,
) -> None:
    """Draw a rank's badge in the top-left corner of the entry at ``(left, top, width)``."""
    name = _RANK_NAMES[rank]
    # The ink's own box, so the text sits centred in the badge whatever the font's bearings.
    ink_left, ink_top, ink_right, ink_bottom = (round(v) for v in draw.textbbox((0, 0), name, font=font))
    pad_x, pad_y = round((ink_bottom - ink_top) * 0.45), round((ink_bottom - ink_top) * 0.35)
    badge_w, badge_h = ink_right - ink_left + 2 * pad_x, ink_bottom - ink_top + 2 * pad_y
    left, top, width = entry
    inset = max(2, round(height * _BADGE_INSET))
    # On an entry too narrow for the badge, centre it rather than let it hang off one side.
    x = left + inset if badge_w + 2 * inset <= width else left + (width - badge_w) // 2
    y = top + inset
    # A dark outline keeps a gold badge visible on a yellow picture.
    outline = max(1, round(height / 256))
    draw.rounded_rectangle(
        (x, y, x + badge_w, y + badge_h),
        radius=pad_y + 2,
        fill=_RANK_COLOURS[rank],
        outline=_BADGE_TEXT,
        width=outline,
    )
    draw.text((x + pad_x - ink_left, y + pad_y - ink_top), name, font=font, fill=_BADGE_TEXT)


def _fit_text(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, room: float
) -> str:
    """Shorten ``text`` with "..." until it is at most ``room`` pixels wide."""
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + "...", font=font) > room:
        text = text[:-1]
    return text.rstrip() + "..."


def drawable_line(text: str, drawable: Collection[str] = PRINTABLE_ASCII) -> str:
    """Fold member-supplied text to one line of characters a font can draw ("" stays "").

    "Zoë" becomes "Zoe", emoji and zero-width characters are dropped, other scripts become "?".
    """
    folded: list[str] = []
    for char in unicodedata.normalize("NFKD", text.translate(_ASCII_FOLD)).translate(_ASCII_FOLD):
        if char in drawable:
            folded.append(char)
        elif char.isspace():
            # A newline or tab in a name would break the layout.
            folded.append(" ")
        elif unicodedata.category(char)[0] in "LN":
            folded.append("?")
        # Combining accents, emoji, variation selectors and zero-width joiners are dropped.
    line = _UNKNOWN_RUN.sub("?", " ".join("".join(folded).split()))
    # A name made only of emoji still deserves a mark.
    return line or ("?" if text.strip() else "")


# --------------------------------------------------------------------------- helpers


def _decode(data: bytes, *, load: bool = True) -> Image.Image:
    """Open trusted bytes (renderer output or an already validated upload) as an image."""
    image = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS)
    if load:
        image.load()
    return image


def _flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    flat = Image.new("RGB", image.size, background)
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def _megabytes(size: int) -> str:
    # Discord's own interface says "MB" for 2**20 bytes; members compare against that.
    return f"{size / 2**20:.1f}".removesuffix(".0") + " MB"


def _mebibytes(size: int) -> str:
    if size < 2**20:
        return f"{size / 2**10:.0f} KiB"
    return f"{size / 2**20:.1f}".removesuffix(".0") + " MiB"


def _megapixels(pixels: int) -> str:
    if pixels >= 1_000_000_000:
        return f"{pixels / 1e9:.1f} gigapixels"
    if pixels >= 1_000_000:
        return f"{pixels / 1e6:.1f} megapixels"
    return f"{pixels:,} pixels"
