"""Video decode, encode and probe.

Encoding goes through PyAV (libx264, yuv420p MP4) because OpenCV's wheels cannot write H.264.
Decoding prefers decord (fast random access) in containers whose index places every frame
(`RANDOM_ACCESS_DEMUXERS`), and decodes with PyAV, in order, everything else and whatever
decord cannot read (AV1, in-memory buffers it rejects).
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

from datakit.io.files import special_kind

logger = logging.getLogger(__name__)

VideoSource = str | os.PathLike | bytes
"""A video on disk (path) or in memory (the bytes of a whole file)."""

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow",
)


class VideoError(RuntimeError):
    """A video could not be decoded or encoded; the message says which and why."""


@dataclass(frozen=True)
class VideoInfo:
    """What a container says about its first video stream."""

    frames: int
    fps: float
    width: int  # as shown: a stored size turned by `turns`
    height: int
    codec: str
    turns: int = 0  # counter-clockwise quarter turns the display matrix asks for
    pixel_aspect: float = 1.0  # a stored pixel's width over its height (anamorphic: not 1)
    hidden_frames: int = 0  # frames stored but not shown: an edit list trims the start
    interlaced: bool = False  # the first frame is two fields (1080i camcorders, broadcast)
    transfer: str = ""  # "pq" or "hlg" for an HDR source; "" for SDR or unknown

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0


# x264's instruction sets up to AVX2, by the names its `asm` option takes.
X264_UP_TO_AVX2 = "MMX2,SSE,SSE2,SSE2Fast,SSE3,SSSE3,SSE4.1,SSE4.2,LZCNT,AVX,FMA3,BMI1,BMI2,AVX2"


@functools.lru_cache(maxsize=1)
def x264_params() -> str:
    """x264 options that keep encoding deterministic on this CPU ("" where none are needed).

    On CPUs with AVX-512, x264's AVX-512 code (with MB-tree, its default rate control) makes
    the bytes of a clip depend on what the process encoded before, at many frame widths
    (32 to 352 px among them, measured on an AMD EPYC with AVX-512): the same frames gave up
    to 8 different MP4s in 8 calls. Restricting x264 to AVX2, which every AVX-512 CPU has,
    makes them identical, at no measurable cost in size or quality. Linux only (read from
    /proc/cpuinfo); elsewhere x264 picks its own instruction sets.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line.split(":", 1)[1].split() for line in info
                          if line.startswith("flags")), [])
    except OSError:
        return ""
    return f"asm={X264_UP_TO_AVX2}" if "avx512f" in flags and "avx2" in flags else ""


def even_size(width: int, height: int) -> tuple[int, int]:
    """yuv420p needs even dimensions: round each down to the nearest even number."""
    return max(2, width - width % 2), max(2, height - height % 2)


PIXEL_FORMATS = ("rgb24", "yuv420p")
TIMED_CLOCK = Fraction(1, 90000)  # MPEG's 90 kHz: the time base of frames written with times
# What every written stream says of its colour (H.264's VUI, ISO/IEC 23091-2 codes): the
# BT.601 limited-range matrix that swscale and the pan-zoom renderer convert with, on
# BT.709 primaries and transfer (sRGB photos, HD sources). Untagged, a browser decodes an
# HD stream with BT.709's matrix instead: Chromium showed rgb(0, 200, 0) as (0, 170, 2)
# and (220, 40, 40) as (236, 58, 40); decoders that follow the tags (PyAV, decord, ffmpeg)
# give the same pixels either way.
COLOUR_TAGS = {"colorspace": 6, "color_range": 1, "color_primaries": 1, "color_trc": 1}


class VideoWriter:
    """Stream frames into an H.264 MP4, one frame at a time.

    Memory stays bounded by one frame, so a generator can write a long video as it goes.
    Frames are RGB by default; a caller that already holds yuv420p planes (the encoder's own
    format) passes `pixel_format="yuv420p"`, which skips swscale's conversion and its copy.

    Args:
        target: a path, or a binary file object (e.g. `io.BytesIO`) to write the MP4 into.
        width, height: frame size; must be even (see `even_size`).
        fps: frames per second (a float such as 29.97 is kept as an exact fraction).
        crf: x264 constant rate factor, 0 (lossless) to 51; lower is better and larger.
        preset: x264 speed/size trade-off, one of `X264_PRESETS`.
        threads: encoder threads; 0 lets x264 decide. Worker pools pass 1 so processes
            do not oversubscribe the cores.
        pixel_format: "rgb24", frames of shape (height, width, 3); or "yuv420p", frames of
            shape (height * 3 // 2, width): the Y plane, then U and V (each height/2 x
            width/2, row after row), BT.601 limited range as swscale writes them.
        pixel_aspect: a stored pixel's width over its height, written as the stream's
            sample aspect ratio (re-encoding an anamorphic clip keeps how it is shown).
        times: each frame's presentation time in seconds (a variable-frame-rate source's,
            `frame_times`), or None for frames 1/fps apart; frames past its end follow the
            last at 1/fps.
    """

    def __init__(
        self,
        target: str | os.PathLike | BinaryIO,
        width: int,
        height: int,
        fps: float,
        crf: int = 18,
        preset: str = "medium",
        threads: int = 0,
        pixel_format: str = "rgb24",
        pixel_aspect: float = 1.0,
        times: Sequence[float] | None = None,
    ):
        import av

        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive and even, got {width}x{height}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        if preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"pixel_format must be one of {', '.join(PIXEL_FORMATS)}, "
                             f"got {pixel_format!r}")
        self.width, self.height = width, height
        self.pixel_format = pixel_format
        self._frame_shape = ((height, width, 3) if pixel_format == "rgb24"
                             else (height * 3 // 2, width))
        self.frames_written = 0
        rate = Fraction(fps).limit_denominator(1001)
        self._container = av.open(target, mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        options = {"crf": str(crf), "preset": preset}
        if x264_params():
            options["x264-params"] = x264_params()
        self._stream.options = options
        self._stream.codec_context.thread_count = threads
        for name, code in COLOUR_TAGS.items():
            setattr(self._stream.codec_context, name, code)
        if not square_pixels(pixel_aspect):  # anamorphic: players stretch it back
            self._stream.codec_context.sample_aspect_ratio = Fraction(
                pixel_aspect).limit_denominator(1000)
        self._times = None if times is None else list(times)
        self._fps = fps
        if self._times is not None:  # a fine clock, so each frame keeps its own time
            self._stream.codec_context.time_base = self._stream.time_base = TIMED_CLOCK
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 frame in the writer's `pixel_format`."""
        import av

        if frame.shape != self._frame_shape or frame.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 frame of shape {self._frame_shape} ({self.pixel_format}), "
                f"got {frame.dtype} {frame.shape}"
            )
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                 format=self.pixel_format)
        if self._times is not None:
            index = self.frames_written
            time = (self._times[index] if index < len(self._times) else
                    self._times[-1] + (index - len(self._times) + 1) / self._fps)
            video_frame.pts, video_frame.time_base = round(time / TIMED_CLOCK), TIMED_CLOCK
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def write_many(self, frames: Iterable[np.ndarray]) -> None:
        for frame in frames:
            self.write(frame)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encode_video(
    frames: Iterable[np.ndarray],
    fps: float,
    crf: int = 18,
    preset: str = "medium",
    threads: int = 0,
    pixel_format: str = "rgb24",
    pixel_aspect: float = 1.0,
    times: Sequence[float] | None = None,
) -> bytes:
    """Encode uint8 frames (all the same even size; RGB, or yuv420p planes as `VideoWriter`
    takes them, with its `pixel_aspect` and `times`) to the bytes of an H.264 MP4."""
    iterator = iter(frames)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError("cannot encode a video with no frames") from None
    buffer = io.BytesIO()
    height, width = first.shape[:2]
    if pixel_format == "yuv420p":
        height = height * 2 // 3
    with VideoWriter(buffer, width, height, fps, crf=crf, preset=preset, threads=threads,
                     pixel_format=pixel_format, pixel_aspect=pixel_aspect, times=times) as out:
        out.write(first)
        out.write_many(iterator)
    return buffer.getvalue()


def open_container(source: VideoSource):
    """A PyAV container on a path or on bytes held in memory."""
    import av

    return av.open(io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source))


def probe(source: VideoSource) -> VideoInfo:
    """Frame count, fps, size and codec of the first video stream.

    The frame count is counted by demuxing when the container does not store it.

    Raises:
        VideoError: the file is empty, a dangling symlink, a still image, holds no video
            stream, or cannot be read; the message says which.
    """
    _check_file(source)
    try:
        with open_container(source) as container:
            if container.format.name in STILL_IMAGE_FORMATS or container.format.name.endswith(
                    "_pipe"):
                raise VideoError(f"{describe_source(source)}: not a video: a still image "
                                 f"({container.format.name})")
            if not container.streams.video:
                raise VideoError(f"{describe_source(source)}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            stored = frames = stream.frames
            if not stored or trims_its_start(container, stream):
                frames = _count_packets(open_container(source), 0)
            width, height = stream.codec_context.width, stream.codec_context.height
            turns, interlaced, transfer = _first_frame_facts(source)
            return VideoInfo(
                frames=int(frames),
                fps=fps,
                width=height if turns % 2 else width,
                height=width if turns % 2 else height,
                codec=stream.codec_context.name,
                turns=turns,
                pixel_aspect=stream_pixel_aspect(stream),
                hidden_frames=max(0, stored - frames) if stored else 0,
                interlaced=interlaced,
                transfer=transfer,
            )
    except VideoError:
        raise
    except Exception as error:  # av raises many error types; all mean "unreadable"
        raise VideoError(f"{describe_source(source)}: cannot probe ({error})") from error


STILL_IMAGE_FORMATS = ("image2",)
"""FFmpeg demuxers (and every `*_pipe` one) that read a still image as a one-frame video."""


def _check_file(source: VideoSource) -> None:
    """The file problems FFmpeg names badly ("Invalid data found", "No such file") or not at
    all (it waits forever on a FIFO): an empty file, a symlink whose target is gone, and a
    path that is not a regular file."""
    if isinstance(source, bytes):
        if not source:
            raise VideoError(f"{describe_source(source)}: empty file")
        return
    path = os.fspath(source)
    kind = special_kind(path)
    if kind is not None:
        raise VideoError(f"{describe_source(source)}: not a regular file: {kind}")
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        if os.path.islink(path):
            raise VideoError(f"{describe_source(source)}: dangling symlink: target "
                             f"{os.readlink(path)} is missing") from None
        return  # probe says it
    except OSError:
        return
    if size == 0:
        raise VideoError(f"{describe_source(source)}: empty file")


def quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that stand a decoded PyAV frame upright, from its
    display matrix (a phone's portrait clip is stored landscape, turned by 90 or -90)."""
    return round((frame.rotation or 0) / 90) % 4


def upright_rgb(frame, pixel_aspect: float = 1.0, peak_nits: float | None = None
                ) -> np.ndarray:
    """A decoded PyAV frame as RGB, as players show it (and decord reads it): turned by its
    display matrix; with `pixel_aspect` (a stored pixel's width over its height, the
    stream's sample aspect ratio) other than 1, first stretched to square pixels
    (bilinear, width to the nearest even number), as players show anamorphic video. An HDR
    frame (PQ, HLG) is tone-mapped to SDR (`colour.tone_map`), its peak `peak_nits` (the
    stream's, `colour.signal_peak` of its first frame: one curve for every frame) or, when
    None, this frame's own."""
    width = square_width(frame.width, pixel_aspect)
    transfer = HDR_TRANSFERS.get(int(frame.color_trc), "")
    size = {} if width == frame.width else {"width": width, "height": frame.height}
    if transfer:
        from datakit.io.colour import signal_peak, tone_map

        rgb = tone_map(frame.to_ndarray(format="rgb48le", **size), transfer,
                       signal_peak(frame) if peak_nits is None else peak_nits,
                       bt2020=int(frame.color_primaries) == BT2020_PRIMARIES)
    else:
        rgb = frame.to_ndarray(format="rgb24", **size)
    turns = quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def shown_size(frame, pixel_aspect: float = 1.0) -> tuple[int, int]:
    """(width, height) of `upright_rgb(frame, pixel_aspect)`, without decoding it."""
    width = square_width(frame.width, pixel_aspect)
    return (frame.height, width) if quarter_turns(frame) % 2 else (width, frame.height)


def stream_pixel_aspect(stream) -> float:
    """A stored pixel's width over its height: the stream's sample aspect ratio, 1 unset."""
    aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return float(aspect) if aspect else 1.0


def square_pixels(pixel_aspect: float) -> bool:
    """Whether a pixel aspect is 1 (to the precision containers store it)."""
    return abs(pixel_aspect - 1.0) <= 1e-3


def square_width(width: int, pixel_aspect: float) -> int:
    """The width a stored width is shown at: stretched to square pixels, to an even number."""
    if square_pixels(pixel_aspect):
        return width
    return max(2, round(width * pixel_aspect / 2) * 2)


HDR_TRANSFERS = {16: "pq", 18: "hlg"}  # FFmpeg's AVCOL_TRC_SMPTE2084, AVCOL_TRC_ARIB_STD_B67
BT2020_PRIMARIES = 9  # AVCOL_PRI_BT2020


def _first_frame_facts(source: VideoSource) -> tuple[int, bool, str]:
    """What the first decoded frame tells (PyAV exposes no stream side data, and H.264 says
    its field order only once a frame is decoded): the display matrix's quarter turns,
    whether the frame is interlaced, and an HDR transfer's name ("pq", "hlg"; "" else).
    (0, False, "") when nothing decodes."""
    try:
        with open_container(source) as container:
            frame = next(container.decode(video=0))
    except Exception:  # an unreadable file fails where it is decoded, with its reason
        return 0, False, ""
    return (quarter_turns(frame), bool(frame.interlaced_frame),
            HDR_TRANSFERS.get(int(frame.color_trc), ""))


def hdr_peak(frame) -> float:
    """The peak in nits that tone-maps every frame of `frame`'s stream (`frame` its first);
    0.0 for SDR."""
    if int(frame.color_trc) not in HDR_TRANSFERS:
        return 0.0
    from datakit.io.colour import signal_peak

    return signal_peak(frame)


def source_notes(info: VideoInfo, kept: bool = False) -> list[str]:
    """What a sample made from this source inherits that its pixels do not say (notes for the
    manifest row, so such clips can be found and filtered): an interlaced source was
    deinterlaced (`progressive_frames`), an HDR one tone-mapped to SDR (`upright_rgb`); or,
    `kept` (the sample is the source's bytes), that it is still woven or HDR."""
    notes = []
    if info.interlaced:
        notes.append("interlaced source: kept as it was (fields woven)" if kept
                     else "interlaced source: deinterlaced (bwdif)")
    if info.transfer:
        name = f"HDR source ({info.transfer.upper()})"
        notes.append(f"{name}: kept as it was (loaders that do not tone-map show it washed "
                     "out)" if kept else f"{name}: tone-mapped to SDR BT.709 (Hable)")
    return notes


def _count_packets(container, index: int) -> int:
    """Video packets of stream `index` that are shown (a container that stores no frame
    count, or whose edit list leaves out frames it stores); a file that ends where its header
    promised more counts what it holds. Closes the container."""
    import av

    count = 0
    with container:
        try:
            for packet in container.demux(container.streams.video[index]):
                count += bool(packet.size) and not packet.is_discard
        except av.error.EOFError:
            pass
    return count


LEADING_PACKETS = 16
"""Packets looked at for a trimmed start: a cut's pre-roll comes first in decode order."""


def trims_its_start(container, stream) -> bool:
    """Whether an edit list starts the clip after its first stored frames (what `ffmpeg -ss
    ... -c copy` writes: the GOP before the cut point is kept, flagged to be decoded and not
    shown). Players show fewer frames than the container counts; decord counts them all, and
    returned the last shown frame again in their place (an MP4 that stores 40 frames and shows
    30: its last 10 frames were the 30th, repeated). Reads up to LEADING_PACKETS packets."""
    for packet in itertools.islice(container.demux(stream), LEADING_PACKETS):
        if packet.size and packet.is_discard:
            return True
    return False


EVEN_STEPS = 0.25  # frame steps within this share of the typical one are a constant rate


def frame_times(source: VideoSource) -> list[float] | None:
    """The shown frames' presentation times, in seconds from the first, when they are not
    evenly spaced (a phone's variable frame rate: a real clip stalls 185 ms among 33 ms
    frames); None when every step is within EVEN_STEPS of the typical one, or the file
    cannot say. From the packets' timestamps: nothing is decoded.

    A clip re-encoded with them (`VideoWriter(times=...)`) keeps its timing; without them
    its frames are spread evenly at the average rate.
    """
    try:
        with open_container(source) as container:
            stream = container.streams.video[0]
            stamps = sorted(float(packet.pts * packet.time_base)
                            for packet in container.demux(stream)
                            if packet.size and not packet.is_discard and packet.pts is not None)
    except Exception:  # unreadable files fail where they are decoded, with their reason
        return None
    if len(stamps) < 3:
        return None
    steps = np.diff(stamps)
    typical = float(np.median(steps))
    if typical <= 0 or float(np.abs(steps - typical).max()) <= EVEN_STEPS * typical:
        return None
    return [stamp - stamps[0] for stamp in stamps]


def read_frames(source: VideoSource, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode frames to an RGB uint8 array of shape (N, H, W, 3).

    Args:
        source: a path or the bytes of a video file.
        indices: the frames to return (any order, repeats allowed); all frames if None.
    """
    try:
        if decord_reads_exactly(source):
            return _read_frames_decord(source, indices)
    except Exception as error:
        logger.debug("decord could not read %s (%s); trying PyAV", describe_source(source), error)
    try:
        return _read_frames_pyav(source, indices)
    except VideoError:
        raise
    except Exception as error:
        raise VideoError(f"{describe_source(source)}: cannot decode ({error})") from error


def iter_frames(source: VideoSource) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames one by one, so a long video never sits in memory whole."""
    try:
        with open_container(source) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            peak = None
            for frame in progressive_frames(container, stream):
                if peak is None:
                    peak = hdr_peak(frame)
                yield upright_rgb(frame, peak_nits=peak)
    except Exception as error:
        raise VideoError(f"{describe_source(source)}: cannot decode ({error})") from error


DEINTERLACER = "bwdif=mode=send_frame:parity=auto:deint=interlaced"
"""FFmpeg's bwdif (Bob Weaver): one progressive frame per interlaced frame, each field
interpolated from its neighbours in space and time; frames not flagged interlaced pass."""


def progressive_frames(container, stream) -> Iterator[object]:
    """`stream`'s decoded PyAV frames, deinterlaced (DEINTERLACER) when the first one is
    interlaced (camcorders' 1080i, broadcast): as decoded, such a frame weaves two fields
    taken 1/50 s apart, and anything that moves is combed. The count, the timestamps and the
    display matrix are kept."""
    import av

    frames = container.decode(stream)
    first = next(frames, None)
    if first is None:
        return
    if not first.interlaced_frame:
        yield first
        yield from frames
        return
    graph = av.filter.Graph()
    source = graph.add_buffer(template=stream)
    name, _, arguments = DEINTERLACER.partition("=")
    fields = graph.add(name, arguments)
    sink = graph.add("buffersink")
    source.link_to(fields)
    fields.link_to(sink)
    graph.configure()
    for frame in itertools.chain([first], frames, [None]):  # None: the filter's last frame
        source.push(frame)
        while True:
            try:
                yield sink.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break


def timed_frames(container, stream, fps: float) -> Iterator[tuple[float, object]]:
    """(seconds since the first frame, PyAV frame) for each decoded frame of `stream`.

    Times come from the frames' timestamps, not their count: an AVI that stores a still
    stretch as empty packets, or variable-frame-rate phone footage, decodes fewer frames than
    its header's frame count, spread over the whole duration. A frame without a timestamp
    follows the one before by 1/`fps`; times never go backwards.
    """
    first = None
    last = -math.inf
    for frame in progressive_frames(container, stream):
        if frame.pts is None or frame.time_base is None:
            time = last + 1.0 / fps if last > -math.inf else 0.0
        else:
            stamp = float(frame.pts * frame.time_base)
            first = stamp if first is None else first
            time = stamp - first
        last = max(last, time)
        yield last, frame


RANDOM_ACCESS_DEMUXERS = ("mov", "matroska", "avi")
"""FFmpeg demuxers (MP4/MOV/3GP, MKV/WebM, AVI) whose index gives every frame's place, so
decord's seeks land on the frames asked for. In MPEG program and transport streams (.mpg,
.ts, camcorders' .mts), which carry no index, decord returned other frames than those asked
for, with only a warning on stderr (Kivy's cityCC0.mpg: 90 of the first 90 frames wrong),
so those, and any container not named here, are decoded in order by PyAV."""


def decord_reads_exactly(source: VideoSource) -> bool:
    """Whether decord gives `source`'s frames as players show them: its container is one of
    RANDOM_ACCESS_DEMUXERS, shows every frame it stores (`trims_its_start`), and is neither
    interlaced (decord cannot deinterlace: `progressive_frames`) nor HDR (decord cannot
    tone-map, and converts 10-bit video with other coefficients than FFmpeg)."""
    with open_container(source) as container:
        names = container.format.name.split(",")
        if not any(name in RANDOM_ACCESS_DEMUXERS for name in names):
            return False
        if container.streams.video and trims_its_start(container, container.streams.video[0]):
            return False
    _, interlaced, transfer = _first_frame_facts(source)
    return not interlaced and not transfer


def _read_frames_decord(source: VideoSource, indices: Sequence[int] | None) -> np.ndarray:
    import decord

    reader = decord.VideoReader(
        io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source),
        ctx=decord.cpu(0),
        num_threads=1,
    )
    count = len(reader)
    wanted = list(range(count)) if indices is None else [int(i) for i in indices]
    _check_indices(wanted, count, source)
    if not wanted:
        height, width = reader[0].shape[:2] if count else (0, 0)
        return np.zeros((0, height, width, 3), np.uint8)
    return reader.get_batch(wanted).asnumpy()


def _read_frames_pyav(source: VideoSource, indices: Sequence[int] | None) -> np.ndarray:
    """Frames decoded in order; with `indices`, only the frames asked for are kept, and
    decoding stops after the last of them (key frames of a long video hold a few frames,
    not the video)."""
    if indices is None:
        frames = list(iter_frames(source))
        return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
    wanted = [int(i) for i in indices]
    keep, last = set(wanted), max(wanted, default=0)
    kept: dict[int, np.ndarray] = {}
    count, shape = 0, (0, 0)
    for count, frame in enumerate(iter_frames(source), 1):
        shape = frame.shape[:2]
        if count - 1 in keep:
            kept[count - 1] = frame
        if count > last:
            break
    _check_indices(wanted, count, source)
    if not wanted:
        return np.zeros((0, *shape, 3), np.uint8)
    return np.stack([kept[i] for i in wanted])


def _check_indices(indices: Sequence[int], count: int, source: VideoSource) -> None:
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise VideoError(f"{describe_source(source)}: frame {bad[0]} out of range "
                         f"(video has {count})")


def describe_source(source: VideoSource) -> str:
    """How error messages name a video: its path, or its size when it is bytes."""
    if isinstance(source, bytes):
        return f"<{len(source)} bytes of video>"
    return str(Path(source))
