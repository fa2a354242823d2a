"""Robust image loading: any file a user's folder may hold becomes an 8-bit RGB array or an
`ImageError` with a short reason.

Web-scraped image sets hold everything: EXIF-rotated phone photos, grayscale and palette
images, RGBA logos, CMYK prints, 16-bit scans, truncated downloads, HTML pages saved as .jpg
and the occasional decompression bomb. A worker calls `load_image` and either gets pixels it
can use as they are, or an error whose message starts with its kind ("truncated image: ...")
so the manifest's error histogram can group on the text before the first ':'.

Colour handling, in short:
- alpha (RGBA, LA, PA, premultiplied, palette or tRNS transparency) is composited over a
  background, neutral mid-grey by default (`ALPHA_BACKGROUND`), so transparent areas neither
  turn black nor white; `load_image_info` says whether that happened;
- CMYK goes through the embedded ICC profile when there is one (PIL's own CMYK->RGB ignores
  the ink model and gives wrong colours), else through PIL's conversion; RGB and grayscale
  profiles are not applied (the pixels are taken as sRGB);
- 16-bit and 32-bit grayscale (I;16, I, F) are scaled by the range of their sample type
  (65535 -> 255 for 16 bits, [0, 1] for float), never clipped and never stretched per image;
- 16-bit RGB(A) PNG/TIFF are decoded by PIL keeping the high byte of each sample, which is
  within one level of exact rounding.

Decoded arrays are read-only (numpy views PIL's buffer without another copy); take
`np.array(image)` for a writable copy.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from datakit.io.files import special_kind

logger = logging.getLogger(__name__)

# PIL's own warning threshold (1024**3 / 4 / 3 pixels, about 89 MP). PIL's hard error, at twice
# its threshold, still applies on top of `max_pixels`: raise `Image.MAX_IMAGE_PIXELS` as well to
# accept larger images.
DEFAULT_MAX_PIXELS = 89_478_485
ALPHA_BACKGROUND = (128, 128, 128)  # mid-grey


@dataclass(frozen=True)
class DecodedImage:
    """An image as loaded: the RGB array, the JPEG decode scale, and whether transparency
    was composited over a background."""

    array: np.ndarray
    scale: float
    composited: bool

# What PIL raises on a file it cannot parse or decode; anything else is a bug and propagates.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)

# EXIF orientation -> the numpy view that puts the pixels upright (as ImageOps.exif_transpose).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_SWAPS_AXES = (5, 6, 7, 8)


class ImageError(Exception):
    """A file that cannot become an image; the message is "kind: detail", e.g.
    "truncated image: image file is truncated" or "decompression bomb: ... > limit ..."."""


def load_image(
    source: str | os.PathLike | bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | None = None,
    background: tuple[int, int, int] = ALPHA_BACKGROUND,
) -> np.ndarray:
    """Load an image as an upright 8-bit RGB array of shape (H, W, 3), C-contiguous, read-only.

    Args:
        source: a file path, or the file's bytes (e.g. a tar member).
        max_pixels: images whose header declares more pixels are refused before decoding.
        min_size: (width, height) the caller needs after EXIF rotation; a JPEG is then decoded
            at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least this large.
            Use `load_image_with_scale` to learn the scale applied.
        background: the RGB colour transparent pixels are composited over.

    Raises:
        ImageError: the file is missing, empty, unreadable, not an image, truncated, corrupt,
            too large or of a mode that has no RGB rendering.
    """
    return load_image_info(source, max_pixels, min_size, background).array


def load_image_with_scale(
    source: str | os.PathLike | bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, float]:
    """`load_image`, also returning the decode scale (see `load_image_info`)."""
    decoded = load_image_info(source, max_pixels, min_size)
    return decoded.array, decoded.scale


def load_image_info(
    source: str | os.PathLike | bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | None = None,
    background: tuple[int, int, int] = ALPHA_BACKGROUND,
) -> DecodedImage:
    """`load_image`, also returning the decode scale: 1.0, or 1/2, 1/4, 1/8 when `min_size`
    let a JPEG decode smaller. A point at (x, y) in the array is at (x / scale, y / scale) in
    the full-size upright image, so callers can keep geometry in original-image units.

    Args:
        source: a file path, or the file's bytes.
        max_pixels: images whose header declares more pixels are refused before decoding.
        min_size: (width, height) the caller needs after EXIF rotation (see `load_image`).
        background: the RGB colour transparent pixels are composited over.
    """
    # 1. Check inputs
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if min_size is not None and (len(min_size) != 2 or min(min_size) < 1):
        raise ValueError(f"min_size must be two positive sizes (width, height), got {min_size}")

    # 2. Open the file ourselves, so file-system failures get their own reasons
    with _open_source(source) as file, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            array, scale, composited = _decode(file, max_pixels, min_size, background)
        finally:
            for warning in caught:
                logger.debug("PIL warning on %s: %s", _describe(source), warning.message)
    array.flags.writeable = False
    return DecodedImage(array, scale, composited)


def _decode(
    file: io.BufferedIOBase, max_pixels: int, min_size: tuple[int, int] | None,
    background: tuple[int, int, int],
) -> tuple[np.ndarray, float, bool]:
    try:
        # 3. Read the header and refuse bombs before any pixel is decoded
        _check_heif(file)
        image = Image.open(file)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                f"decompression bomb: {width * height} pixels > limit {max_pixels} "
                f"({width}x{height}; --max-pixels raises the limit)"
            )

        # 4. Let a JPEG decode at a reduced DCT scale when the caller needs fewer pixels
        scale = 1.0
        if min_size is not None and image.format in ("JPEG", "MPO"):  # MPO: camera JPEGs
            need_w, need_h = min_size
            if _orientation(image) in _SWAPS_AXES:
                need_w, need_h = need_h, need_w
            drafted = image.draft("RGB", (need_w, need_h))
            if drafted is not None:
                scale = drafted[1][2] / width

        # 5. Decode (PIL raises on truncated data: ImageFile.LOAD_TRUNCATED_IMAGES stays False)
        rawmode = _rawmode(image)
        rgb, composited = (_decode_rgb_jpeg(file, image) if scale == 1.0 else None), False
        if rgb is None:
            image.load()

            # 6. Convert to 8-bit RGB
            try:
                rgb, composited = _to_rgb(image, rawmode, background)
            except ValueError:  # PIL: "conversion from X to Y not supported"
                raise ImageError(f"unsupported mode: {image.mode}") from None
        orientation = _orientation(image)
    except UnidentifiedImageError:
        raise ImageError("not an image: cannot identify image file") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"decompression bomb: {error}") from None
    except _DECODE_ERRORS as error:
        message = str(error) or type(error).__name__
        kind = "truncated image" if "truncated" in message.lower() else "corrupt image"
        raise ImageError(f"{kind}: {message}") from None
    if orientation in _UPRIGHT:
        rgb = _UPRIGHT[orientation](rgb)
    return np.ascontiguousarray(rgb), scale, composited


HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
               b"mif1", b"msf1")
"""ISO-BMFF major brands of HEIF/HEIC stills (phones' photos); AVIF's own brand (`avif`),
Pillow reads."""


def _check_heif(file: io.BufferedIOBase) -> None:
    """A HEIF/HEIC photo opens through pillow-heif when it is installed (the `heif` extra);
    without it, PIL cannot identify the file, so say what is missing instead."""
    head = file.read(12)
    file.seek(0)
    if head[4:8] != b"ftyp" or head[8:12] not in HEIF_BRANDS:
        return
    if not _heif_opener():
        raise ImageError("unsupported format: HEIF/HEIC needs pillow-heif "
                         "(pip install 'datakit[heif]')")


@functools.cache
def _heif_opener() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _decode_rgb_jpeg(file: io.BufferedIOBase, image: Image.Image) -> np.ndarray | None:
    """A complete colour JPEG at full scale decoded by OpenCV, or None for any other file
    (PIL decodes it).

    Both wrap libjpeg-turbo with the same settings (accurate integer IDCT, smooth chroma
    upsampling), so the pixels are the very ones PIL gives (a test checks qualities,
    subsamplings and progressive files); OpenCV hands them over without PIL's copies
    through `tobytes`: 1.6x faster on a 2048 px photo. A drafted decode stays with PIL. OpenCV
    gives nothing for a truncated or corrupt file, which PIL then decodes and names.
    """
    if image.format != "JPEG" or image.mode != "RGB":
        return None
    import cv2

    colour = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV 4.11 and later
    if colour is None:
        return None
    file.seek(0)
    rgb = cv2.imdecode(np.frombuffer(file.read(), np.uint8),
                       colour | cv2.IMREAD_IGNORE_ORIENTATION)
    if rgb is None or rgb.shape != (image.size[1], image.size[0], 3):
        return None
    return rgb


def _open_source(source: str | os.PathLike | bytes) -> io.BufferedIOBase:
    """A binary file for `source`, or an ImageError naming why the file cannot be read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError("empty file")
        return io.BytesIO(source)
    path = os.fspath(source)
    kind = special_kind(path)
    if kind is not None and kind != "a folder":  # a folder: open() says it
        raise ImageError(f"not a regular file: {kind}")
    try:
        file = open(path, "rb")  # noqa: SIM115 - returned to the caller's `with`
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(f"dangling symlink: target {os.readlink(path)} is missing") from None
        raise ImageError("missing file: no such file") from None
    except PermissionError:
        raise ImageError("unreadable: permission denied") from None
    except IsADirectoryError:
        raise ImageError("unreadable: is a directory") from None
    except OSError as error:
        raise ImageError(f"unreadable: {error.strerror or error}") from None
    if os.fstat(file.fileno()).st_size == 0:
        file.close()
        raise ImageError("empty file")
    return file


def _describe(source: str | os.PathLike | bytes) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return os.fspath(source)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8); 1 when absent, invalid or unreadable, since a broken
    EXIF block does not make a broken image."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        return 1
    return value if value in _UPRIGHT else 1


def _rawmode(image: Image.Image) -> str:
    """The sample layout in the file ("I;16B", "I;32S", ...), known only before decoding; it
    tells the bit depth behind PIL's 32-bit "I" mode."""
    if not getattr(image, "tile", None):
        return ""
    args = image.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _to_rgb(image: Image.Image, rawmode: str,
            background: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    """8-bit RGB, and whether transparency was composited over `background`."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _gray_to_8bit(np.asarray(image), mode, rawmode)
        return np.repeat(gray[:, :, None], 3, axis=2), False
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(image)), False
    if image.has_transparency_data:
        rgba = np.asarray(image if mode == "RGBA" else image.convert("RGBA"))
        return _composite(rgba, background), True
    return np.asarray(image if mode == "RGB" else image.convert("RGB")), False


def _gray_to_8bit(gray: np.ndarray, mode: str, rawmode: str) -> np.ndarray:
    """Scale by the range of the sample type, so an image's brightness means the same in every
    file (no per-image stretching) and nothing above 255 is clipped."""
    if mode == "F":
        top = 1.0
    elif mode == "I":
        # PIL widens 16-bit samples (PPM, signed TIFF) to "I" too; the file's layout says which
        match = re.fullmatch(r"I;(\d+)(\w*)", rawmode)
        if match is None:  # no layout known: PIL's own signed 32-bit samples
            top = float(2**31 - 1)
        else:
            bits, signed = int(match.group(1)), "S" in match.group(2)
            top = float(2 ** (bits - 1) - 1 if signed else 2**bits - 1)
    else:
        top = 65535.0
    scaled = np.nan_to_num(gray.astype(np.float64) * (255.0 / top))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc:
        from PIL import ImageCms

        try:
            return ImageCms.profileToProfile(
                image,
                ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                ImageCms.createProfile("sRGB"),
                outputMode="RGB",
            )
        except (ImageCms.PyCMSError, OSError, ValueError) as error:
            logger.debug("unusable CMYK ICC profile (%s); using PIL's conversion", error)
    return image.convert("RGB")


def _composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Alpha-blend over `background`, rounding to nearest in integer arithmetic."""
    alpha = rgba[:, :, 3:].astype(np.uint16)
    colour = np.asarray(background, dtype=np.uint16)
    blended = rgba[:, :, :3] * alpha + colour * (255 - alpha) + 127
    return (blended // 255).astype(np.uint8)
