"""datakit.io.images: every odd file a scraped image set holds becomes correct RGB or a clean
error."""

from __future__ import annotations

import io
import os
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from datakit.io.images import (
    ALPHA_BACKGROUND,
    DEFAULT_MAX_PIXELS,
    ImageError,
    load_image,
    load_image_with_scale,
)

GREY = ALPHA_BACKGROUND


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def handmade_png(width: int, height: int, bit_depth: int, color_type: int, pixels: bytes) -> bytes:
    """A PNG written byte by byte, for layouts PIL cannot save (16-bit RGB) and for headers
    that lie about the size (bombs)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(pixels))
        + png_chunk(b"IEND", b"")
    )


def quadrants(width: int = 64, height: int = 48) -> np.ndarray:
    """An image whose every flip and rotation differs: four flat colours, one per quadrant."""
    array = np.zeros((height, width, 3), np.uint8)
    array[: height // 2, : width // 2] = (230, 20, 20)
    array[: height // 2, width // 2 :] = (20, 230, 20)
    array[height // 2 :, : width // 2] = (20, 20, 230)
    array[height // 2 :, width // 2 :] = (230, 230, 20)
    return array


def jpeg_with_orientation(array: np.ndarray, orientation: int | None, quality: int = 95) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    return encode(Image.fromarray(array), "JPEG", quality=quality, exif=exif.tobytes())


def assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (height, width, 3)
    assert array.flags.c_contiguous


# --- EXIF orientation --------------------------------------------------------------------------

UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # stored turned left: turn it right (clockwise)
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_puts_pixels_upright(orientation):
    stored = load_image(jpeg_with_orientation(quadrants(), None))
    data = jpeg_with_orientation(quadrants(), orientation)

    upright = load_image(data)

    np.testing.assert_array_equal(upright, UPRIGHT[orientation](stored))
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(upright, reference)
    swapped = orientation in (5, 6, 7, 8)
    assert_rgb(upright, *((64, 48) if swapped else (48, 64)))


def test_orientation_6_turns_the_top_left_corner_to_the_top_right():
    upright = load_image(jpeg_with_orientation(quadrants(), 6))
    # red was top-left in the stored pixels; a clockwise turn brings it to the top-right
    assert upright.shape == (64, 48, 3)
    np.testing.assert_allclose(upright[2, -3], (230, 20, 20), atol=12)
    np.testing.assert_allclose(upright[-3, -3], (20, 230, 20), atol=12)


# --- modes -------------------------------------------------------------------------------------


def test_rgb_png_is_returned_exactly_and_read_only():
    array = quadrants()
    loaded = load_image(encode(Image.fromarray(array), "PNG"))
    np.testing.assert_array_equal(loaded, array)
    assert not loaded.flags.writeable


def test_path_and_pathlike_sources(tmp_path):
    path = tmp_path / "q.png"
    Image.fromarray(quadrants()).save(path)
    np.testing.assert_array_equal(load_image(path), quadrants())
    np.testing.assert_array_equal(load_image(str(path)), quadrants())


def test_grayscale_and_bilevel_become_grey_rgb():
    gray = np.array([[0, 77, 255]], np.uint8)
    np.testing.assert_array_equal(
        load_image(encode(Image.fromarray(gray), "PNG"))[0], [[0] * 3, [77] * 3, [255] * 3]
    )
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    np.testing.assert_array_equal(load_image(encode(bilevel, "BMP"))[0], [[0] * 3, [255] * 3])


def test_rgba_is_composited_on_grey_not_black():
    rgba = np.array([[[200, 10, 60, 0], [200, 10, 60, 255], [255, 255, 255, 128]]], np.uint8)
    loaded = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))[0]
    np.testing.assert_array_equal(loaded[0], GREY)
    np.testing.assert_array_equal(loaded[1], (200, 10, 60))
    expected = round((255 * 128 + ALPHA_BACKGROUND[0] * 127) / 255)
    np.testing.assert_array_equal(loaded[2], (expected,) * 3)


def test_gray_alpha_is_composited():
    la = np.array([[[200, 0], [200, 255]]], np.uint8)
    loaded = load_image(encode(Image.fromarray(la, "LA"), "PNG"))[0]
    np.testing.assert_array_equal(loaded, [GREY, (200, 200, 200)])


def test_palette_with_transparency():
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    image.putdata([0, 1, 2])
    # index 0 fully transparent, index 1 opaque, index 2 half transparent (PNG tRNS per entry)
    loaded = load_image(encode(image, "PNG", transparency=bytes([0, 255, 128])))[0]
    np.testing.assert_array_equal(loaded[0], GREY)
    np.testing.assert_array_equal(loaded[1], (0, 255, 0))
    half = round(ALPHA_BACKGROUND[0] * 127 / 255)
    np.testing.assert_array_equal(loaded[2], (half, half, round((255 * 128 + 128 * 127) / 255)))


def test_palette_gif_with_transparent_index():
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 50])
    image.putdata([0, 1])
    loaded = load_image(encode(image, "GIF", transparency=0))[0]
    np.testing.assert_array_equal(loaded, [GREY, (200, 100, 50)])


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_pure_cyan_becomes_cyan(fmt):
    loaded = load_image(encode(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), fmt))
    np.testing.assert_allclose(loaded[4, 4], (0, 255, 255), atol=3)


def test_cmyk_with_an_unusable_icc_profile_falls_back_to_pil():
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # RGB, not CMYK
    data = encode(Image.new("CMYK", (8, 8), (0, 255, 0, 0)), "JPEG", icc_profile=srgb)
    np.testing.assert_allclose(load_image(data)[4, 4], (255, 0, 255), atol=3)


def test_cmyk_icc_profile_is_applied():
    cmyk_profile = handmade_cmyk_profile()
    image = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    with_profile = load_image(encode(image, "TIFF", icc_profile=cmyk_profile))
    # the profile prints pure cyan as a real process cyan (Lab 55, -37, -50), far from (0,255,255)
    r, g, b = with_profile[4, 4].astype(int)
    assert r < 40 and 120 < g < 190 and b > 200
    white = load_image(
        encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "TIFF", icc_profile=cmyk_profile)
    )
    np.testing.assert_allclose(white[0, 0], (255, 255, 255), atol=3)


def handmade_cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK output profile: an 8-bit A2B0 lookup table (2 grid points per ink)
    to Lab, where cyan ink alone gives process cyan and no ink gives paper white."""

    def lab8(lightness: float, a: float, b: float) -> bytes:
        return bytes([round(lightness * 255 / 100), round(a + 128), round(b + 128)])

    grid = b""
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    if (c, m, y, k) == (0, 0, 0, 0):
                        grid += lab8(100, 0, 0)
                    elif (c, m, y, k) == (1, 0, 0, 0):
                        grid += lab8(55, -37, -50)
                    else:
                        grid += lab8(20, 0, 0)
    identity = bytes(range(256))
    lut = b"".join(
        [
            b"mft1" + bytes(4),
            bytes([4, 3, 2, 0]),  # inputs, outputs, grid points, padding
            struct.pack(">9i", 65536, 0, 0, 0, 65536, 0, 0, 0, 65536),  # identity matrix
            identity * 4,  # input curves
            grid,
            identity * 3,  # output curves
        ]
    )
    white = b"XYZ " + bytes(4) + struct.pack(">3i", 63190, 65536, 54061)
    text = b"desc" + bytes(4) + struct.pack(">I", 5) + b"test\0" + bytes(12) + bytes(67)
    tags = [(b"A2B0", lut), (b"wtpt", white), (b"desc", text)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = b"".join(
        [
            struct.pack(">I", size) + b"lcms",
            struct.pack(">I", 0x02100000),  # version 2.1
            b"prtrCMYKLab ",  # output device class, CMYK data, Lab connection space
            bytes(12) + b"acsp" + bytes(24),  # date, signature, platform, flags, device
            struct.pack(">I", 0),  # perceptual intent
            struct.pack(">3i", 63190, 65536, 54061),  # D50 illuminant
            bytes(48),
        ]
    )
    assert len(header) == 128
    return header + table + body


def test_16bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 300, 32896, 65535]], np.uint16)
    loaded = load_image(encode(Image.fromarray(values), "PNG"))[0, :, 0]
    np.testing.assert_array_equal(loaded, [0, 1, 128, 255])


def test_16bit_grayscale_opened_as_32bit_mode_is_scaled_by_16_bits():
    values = np.array([[0, 32896, 65535]], np.uint16)
    data = encode(Image.fromarray(values), "PPM")
    assert Image.open(io.BytesIO(data)).mode == "I"  # PIL widens 16-bit PGM to 32-bit "I"
    np.testing.assert_array_equal(load_image(data)[0, :, 0], [0, 128, 255])


def test_32bit_integer_and_float_grayscale():
    integers = np.array([[0, 2**30, 2**31 - 1]], np.int32)
    np.testing.assert_array_equal(
        load_image(encode(Image.fromarray(integers), "TIFF"))[0, :, 0], [0, 128, 255]
    )
    floats = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(
        load_image(encode(Image.fromarray(floats), "TIFF"))[0, :, 1], [0, 0, 128, 255, 255]
    )


def test_16bit_rgb_png_keeps_the_high_byte():
    pixel = struct.pack(">3H", 65535, 32896, 300) + struct.pack(">3H", 0, 257 * 40, 65535)
    data = handmade_png(2, 1, 16, 2, b"\x00" + pixel)
    np.testing.assert_array_equal(load_image(data)[0], [(255, 128, 1), (0, 40, 255)])


def test_16bit_rgba_png_is_composited():
    pixel = struct.pack(">4H", 65535, 0, 0, 0) + struct.pack(">4H", 0, 65535, 0, 65535)
    data = handmade_png(2, 1, 16, 6, b"\x00" + pixel)
    np.testing.assert_array_equal(load_image(data)[0], [GREY, (0, 255, 0)])


# --- bad files ---------------------------------------------------------------------------------


def kind(error: pytest.ExceptionInfo) -> str:
    return str(error.value).split(":")[0]


def test_bomb_is_refused_from_the_header_before_decoding():
    # the header claims 10000x10000 but holds 1 row of data: decoding would fail as truncated
    data = handmade_png(10_000, 10_000, 8, 0, b"\x00" * 10_001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not leak
        with pytest.raises(ImageError) as error:
            load_image(data)
    assert str(error.value).startswith(
        f"decompression bomb: 100000000 pixels > limit {DEFAULT_MAX_PIXELS}"
    )


def test_bomb_beyond_pils_own_hard_limit_is_an_image_error():
    with pytest.raises(ImageError) as error:
        load_image(handmade_png(30_000, 30_000, 8, 0, b"\x00"))
    assert kind(error) == "decompression bomb"


def test_max_pixels_is_our_own_limit():
    data = encode(Image.fromarray(quadrants()), "PNG")
    with pytest.raises(ImageError, match="decompression bomb: 3072 pixels > limit 3071"):
        load_image(data, max_pixels=64 * 48 - 1)
    assert load_image(data, max_pixels=64 * 48).shape == (48, 64, 3)


def test_truncated_files_are_refused():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    jpeg = jpeg_with_orientation(quadrants(256, 256), None)
    png = encode(Image.fromarray(quadrants(256, 256)), "PNG")
    for data in (jpeg[: len(jpeg) // 2], jpeg[:-20], png[: len(png) // 2]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ImageError) as error:
                load_image(data)
        assert kind(error) == "truncated image", error.value
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_empty_and_non_image_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "page.jpg"
    text.write_text("<html>404 not found</html>")
    png = handmade_png(4, 4, 8, 0, bytes(20))
    start = png.index(b"IDAT") + 4
    scrambled = png[:start] + b"\xff" * 8 + png[start + 8 :]  # compressed data made invalid
    for source, expected in [
        (empty, "empty file"),
        (b"", "empty file"),
        (text, "not an image: cannot identify image file"),
        (scrambled, "corrupt image: broken data stream"),
    ]:
        with pytest.raises(ImageError) as error:
            load_image(source)
        assert str(error.value).startswith(expected), error.value


def test_dangling_symlink_and_missing_file(tmp_path):
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageError) as error:
        load_image(link)
    assert kind(error) == "dangling symlink"
    with pytest.raises(ImageError) as error:
        load_image(tmp_path / "never.jpg")
    assert kind(error) == "missing file"


def test_directory_is_unreadable(tmp_path):
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    with pytest.raises(ImageError, match="^unreadable: is a directory$"):
        load_image(folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path):
    path = tmp_path / "secret.png"
    Image.fromarray(quadrants()).save(path)
    path.chmod(0)
    with pytest.raises(ImageError, match="^unreadable: permission denied$"):
        load_image(path)


def test_permission_denied_reason(tmp_path, monkeypatch):
    import datakit.io.images

    def denied(path, mode="r"):  # tests run as root, where chmod 000 does not stop reads
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(datakit.io.images, "open", denied, raising=False)
    with pytest.raises(ImageError, match="^unreadable: permission denied$"):
        load_image(tmp_path / "any.png")


def test_bad_arguments_raise_value_errors():
    data = encode(Image.fromarray(quadrants()), "PNG")
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(data, max_pixels=0)
    with pytest.raises(ValueError, match="min_size"):
        load_image(data, min_size=(0, 10))


# --- reduced-scale JPEG decoding ---------------------------------------------------------------


@pytest.fixture(scope="module")
def big_photo() -> bytes:
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((2048, 1536)))
    return jpeg_with_orientation(photo, None, quality=90)


def test_draft_decodes_at_the_smallest_scale_that_keeps_min_size(big_photo):
    full, scale = load_image_with_scale(big_photo)
    assert (full.shape, scale) == ((1536, 2048, 3), 1.0)
    # 2048 // 500 = 4 and 1536 // 300 = 5: 1/4 scale keeps both sides large enough
    small, scale = load_image_with_scale(big_photo, min_size=(500, 300))
    assert (small.shape, scale) == ((384, 512, 3), 0.25)
    # 1/8 would give 256 px wide, below 300: 1/4 it is
    assert load_image_with_scale(big_photo, min_size=(300, 100))[1] == 0.25
    assert load_image_with_scale(big_photo, min_size=(256, 192))[1] == 0.125
    assert load_image_with_scale(big_photo, min_size=(2000, 10))[1] == 1.0
    # the reduced image is the full one, shrunk: compare with a box-filtered full decode
    boxed = full.reshape(384, 4, 512, 4, 3).mean(axis=(1, 3))
    assert np.abs(small.astype(float) - boxed).mean() < 4


def test_draft_is_faster_than_full_decoding(big_photo):
    def best_of_three(**options) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            load_image(big_photo, **options)
            times.append(time.perf_counter() - start)
        return min(times)

    assert best_of_three(min_size=(256, 192)) < 0.6 * best_of_three()


def test_full_scale_jpegs_decode_to_the_pixels_pil_gives():
    """Colour JPEGs at full scale are decoded by OpenCV (faster); every pixel must be PIL's:
    odd sizes, qualities, chroma subsamplings, progressive files, EXIF rotation."""
    from skimage import data

    photo = data.astronaut()[37:288, 51:384]  # 333 x 251: no side a multiple of 8 or 16
    for quality, subsampling, progressive, orientation in (
            (95, 0, False, None), (90, 1, False, None), (75, 2, False, None),
            (90, 2, True, None), (60, 0, True, 6), (85, 2, False, 3)):
        exif = Image.Exif()
        if orientation is not None:
            exif[0x0112] = orientation
        jpeg = encode(Image.fromarray(photo), "JPEG", quality=quality, subsampling=subsampling,
                      progressive=progressive, exif=exif.tobytes())
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))))
        decoded = load_image(jpeg)
        assert_rgb(decoded, *expected.shape[:2])
        assert np.array_equal(decoded, expected), (quality, subsampling, progressive)


def test_draft_accounts_for_exif_rotation():
    stored = np.asarray(Image.fromarray(quadrants()).resize((2048, 1024)))
    data = jpeg_with_orientation(stored, 6)  # upright it is 1024 wide, 2048 high
    upright, scale = load_image_with_scale(data, min_size=(300, 900))
    assert (upright.shape, scale) == ((1024, 512, 3), 0.5)
    # needing 900 px of upright width leaves no room to shrink the 1024 px stored height
    upright, scale = load_image_with_scale(data, min_size=(900, 300))
    assert upright.shape[1] >= 900 and upright.shape[0] >= 300
    assert scale == 1.0


def test_draft_applies_to_mpo_camera_files():
    frame = Image.fromarray(quadrants(1024, 768))
    data = encode(frame, "MPO", save_all=True, append_images=[frame])
    array, scale = load_image_with_scale(data, min_size=(200, 200))
    assert (array.shape, scale) == ((384, 512, 3), 0.5)


def test_min_size_is_ignored_for_formats_without_draft():
    data = encode(Image.fromarray(quadrants()), "PNG")
    array, scale = load_image_with_scale(data, min_size=(8, 8))
    assert (array.shape, scale) == ((48, 64, 3), 1.0)


def test_a_phone_photo_in_heif_and_an_avif_decode_to_their_pixels(monkeypatch):
    """HEIC is what phones save; AVIF what the web serves. Both were never read: a folder's
    .heic and .avif files were no inputs at all."""
    pillow_heif = pytest.importorskip("pillow_heif", reason="the heif extra is not installed")
    from datakit.io import images

    picture = np.zeros((48, 64, 3), np.uint8)
    picture[:, :32] = (200, 40, 40)
    picture[:, 32:] = (30, 160, 220)
    for fmt in ("HEIF", "AVIF"):
        buffer = io.BytesIO()
        if fmt == "HEIF":
            pillow_heif.from_bytes("RGB", (64, 48), picture.tobytes()).save(buffer, quality=95)
        else:
            Image.fromarray(picture).save(buffer, "AVIF", quality=95)
        decoded = load_image(buffer.getvalue()).astype(int)
        assert decoded.shape == (48, 64, 3)
        assert np.abs(decoded[8:40, 4:28] - (200, 40, 40)).max() <= 12, fmt
        assert np.abs(decoded[8:40, 36:60] - (30, 160, 220)).max() <= 12, fmt
    monkeypatch.setattr(images, "_heif_opener", lambda: False)  # pillow-heif not installed
    buffer = io.BytesIO()
    pillow_heif.from_bytes("RGB", (64, 48), picture.tobytes()).save(buffer, quality=95)
    with pytest.raises(ImageError, match=r"unsupported format: HEIF/HEIC needs pillow-heif"):
        load_image(buffer.getvalue())
