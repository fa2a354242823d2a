"""Broken and odd inputs, made on the spot: videos for `caption`, images for `pan-zoom`.

Each builder writes its files under a folder and returns `{file name stem: expected}`, where
expected is `"ok"`, or `("failed" | "skipped", reason prefix)`: what the manifest row of that
input must say. Keys are the paths relative to the folder with `/` turned into `__`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (96, 64)


def frames(count: int, width: int = SIZE[0], height: int = SIZE[1]) -> list[np.ndarray]:
    """A slow diagonal gradient drifting right: real motion, small files."""
    y, x = np.mgrid[0:height, 0:width]
    return [np.stack([(x * 3 + 9 * i) % 256, (y * 4) % 256, (x + y + 5 * i) % 256],
                     axis=-1).astype(np.uint8) for i in range(count)]


def encode(path: Path, codec: str = "libx264", count: int = 8,
           size: tuple[int, int] = SIZE, pix_fmt: str = "yuv420p",
           container: str | None = None) -> Path:
    """Write a video with PyAV (any codec it has an encoder for), `count` frames at 8 fps."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=8)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        for frame in frames(count, *size):
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return path


def encode_audio_only(path: Path) -> Path:
    """An mp4 holding one AAC stream (a second of silence) and no video."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=16000)
        for index in range(16):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


def png_bytes(width: int = SIZE[0], height: int = SIZE[1]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frames(1, width, height)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def video_corpus(root: Path) -> None:
    """A class-folder tree (`LABEL/NAME.ext`) of good, odd and broken videos."""
    good = encode(root / "walking" / "good.mp4")
    whole = good.read_bytes()
    encode(root / "walking" / "clip.mp4")
    encode(root / "running" / "clip.mp4")  # the same basename in another folder
    encode(root / "running" / "été à la plage.mp4")  # unicode and spaces
    encode(root / "odd" / "odd dims.mp4", size=(321, 241), pix_fmt="yuv444p")  # H.264, odd
    encode(root / "odd" / "odd vp9.webm", codec="libvpx-vp9", size=(321, 241))
    encode(root / "odd" / "one frame.mp4", count=1)
    encode(root / "codecs" / "av1.mp4", codec="libsvtav1")
    encode(root / "codecs" / "vp9.webm", codec="libvpx-vp9")
    encode(root / "codecs" / "vp9.mp4", codec="libvpx-vp9")
    encode_audio_only(root / "broken" / "audio only.mp4")
    broken = root / "broken"
    (broken / "zero.mp4").write_bytes(b"")
    (broken / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (broken / "png.mp4").write_bytes(png_bytes())
    (broken / "text.mp4").write_text("this is a text file, not a video\n")
    (broken / "gone.mp4").symlink_to(broken / "nowhere.mp4")
    os.mkfifo(broken / "pipe.mp4")  # opening it for reading would wait for a writer forever


def image_corpus(root: Path) -> None:
    """A folder of good, odd and broken images."""
    from test_images import handmade_png

    def photo(path: Path, size: tuple[int, int] = (192, 128), **save) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames(1, *size)[0]).save(path, **save)
        return path

    good = photo(root / "good.jpg", quality=90)
    whole = good.read_bytes()
    photo(root / "a" / "photo.jpg")
    photo(root / "b" / "photo.jpg")  # the same basename in another folder
    photo(root / "été à la plage.jpg")  # unicode and spaces
    photo(root / "odd dims.png", size=(321, 241))
    photo(root / "png named.jpg", format="PNG")  # the content decides, not the name
    Image.fromarray(frames(1, 192, 128)[0]).convert("CMYK").save(root / "cmyk.jpg")
    photo(root / "tiny.png", size=(12, 8))  # needs more than --max-upscale
    broken = root / "broken"
    broken.mkdir()
    (broken / "zero.jpg").write_bytes(b"")
    (broken / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (broken / "bomb.png").write_bytes(handmade_png(30000, 30000, 8, 0, b"\0" * 64))
    (broken / "text.png").write_text("this is a text file, not an image\n")
    encode(broken / "mp4 named.jpg", container="mp4")
    (broken / "gone.jpg").symlink_to(broken / "nowhere.jpg")
    os.mkfifo(broken / "pipe.jpg")
    os.mkfifo(root / "good.txt")  # a sidecar caption that would never arrive


def huge_header_video(path: Path) -> Path:
    """An MJPEG AVI whose frame headers (JPEG SOF and AVI headers) claim 16000x16000: what a
    decoder believes before it reads a pixel."""
    import re
    import struct

    encode(path, codec="mjpeg", count=4, pix_fmt="yuvj420p", container="avi")
    data = path.read_bytes()
    width, height = SIZE
    data = re.sub(re.escape(b"\xff\xc0") + b"(...)" + re.escape(struct.pack(">HH", height, width)),
                  lambda m: b"\xff\xc0" + m.group(1) + struct.pack(">HH", 16000, 16000), data,
                  flags=re.S)
    data = data.replace(struct.pack("<II", width, height), struct.pack("<II", 16000, 16000))
    path.write_bytes(data)
    return path
