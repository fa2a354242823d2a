"""Benchmark `datakit pan-zoom` against x264 alone and ffmpeg's `zoompan` filter.

Prints four tables (and saves the figures with --json), all on the same photos:

1. Throughput, each repeat side by side (the median of --repeats is reported, with the
   spread): the whole `datakit pan-zoom` command (a subprocess, start-up included) with
   `--watermarks keep` and with the default (`flag`); its steady rate (clips beyond a
   one-photo run, over the time beyond it); the x264 floor (the very yuv420p frames datakit
   encodes, pre-rendered, encoded by x264 alone in --workers processes); ffmpeg's `zoompan`
   as parallel single-threaded ffmpeg processes, plain and anti-jitter (upscale 4x first).
2. Smoothness of zoom-in clips: the frame-to-frame affine motion of the decoded output is fitted
   with OpenCV's ECC, chained into the path of the frame centre (in first-frame pixels), and a
   degree-3 polynomial is fitted to that path; the RMS residual (pixels) is the jitter.
3. The same picture: PSNR of the frames datakit hands x264 against the frames of the
   renderer before issue 20 (`render_clip`, bicubic RGB, then swscale's yuv420p conversion,
   which encode to the very bytes of that version's clips), and byte equality of the clips
   between repeats, between 1 and 2 workers and between the local and Ray engines.
4. Start-up times.

Photos are made from scikit-image's sample photos (crops, flips, resizes to about 1200 px
wide, JPEG quality 90). Example: python bench/pan_zoom.py --json /tmp/pan_zoom.json
Where the time goes, per process: bench/pan_zoom_profile.py.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pan_zoom_floor import (  # noqa: E402
    clip_paths,
    cpu_per_clip,
    parse_size,
    prepare_floor,
    print_cpu,
    run_floor,
)

# Real photos shipped with scikit-image (no download needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
          "stereo_motorcycle", "immunohistochemistry", "camera", "moon", "brick", "gravel")


# --------------------------------------------------------------------------------------------
# Photos


def make_photos(folder: Path, count: int, width: int, seed: int = 0) -> list[Path]:
    """`count` JPEGs (quality 90) about `width` px wide: random crops (aspect 1.2 to 1.9),
    flips and resizes of scikit-image's sample photos."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    bases = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
            image = image[0]
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        bases.append((name, np.ascontiguousarray(image[:, :, :3])))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        name, image = bases[index % len(bases)]
        h, w = image.shape[:2]
        aspect = rng.uniform(1.2, 1.9)
        share = rng.uniform(0.7, 1.0)
        crop_w = min(w, int(round(np.sqrt(share * w * h * aspect))))
        crop_h = min(h, int(round(crop_w / aspect)))
        left = int(rng.integers(0, w - crop_w + 1))
        top = int(rng.integers(0, h - crop_h + 1))
        crop = image[top:top + crop_h, left:left + crop_w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out_w = int(round(width * rng.uniform(0.95, 1.05)))
        out_h = int(round(out_w * crop.shape[0] / crop.shape[1]))
        photo = Image.fromarray(np.ascontiguousarray(crop)).resize((out_w, out_h),
                                                                   Image.Resampling.LANCZOS)
        path = folder / f"{index:03d}_{name}.jpg"
        photo.save(path, quality=90)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# 1. Throughput


def datakit_command() -> list[str]:
    exe = shutil.which("datakit")
    return [exe] if exe else [sys.executable, "-c", "from datakit.cli import main; main()"]


def run_datakit(src: Path, out: Path, args, motions: str = "all", watermarks: str = "flag",
                workers: int | None = None, engine: str = "local") -> dict:
    """The whole CLI as a user runs it; wall time from process start to exit."""
    shutil.rmtree(out, ignore_errors=True)
    command = datakit_command() + [
        "pan-zoom", str(src), "--out", str(out), "--frames", str(args.frames),
        "--fps", f"{args.fps:g}", "--size", args.size, "--seed", "0",
        "--workers", str(workers or args.workers), "--crf", "18", "--preset", "medium",
        "--motions", motions, "--watermarks", watermarks, "--engine", engine, "--quiet",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"datakit failed ({result.returncode}): {result.stderr[-2000:]}")
    stats = json.loads((out / "stats.json").read_text())
    sizes = [len(video) for _, video in datakit_videos(out)]
    return {"seconds": seconds, "stats": stats, "command": " ".join(command),
            "mean_kb": float(np.mean(sizes)) / 1000 if sizes else 0.0}


def zoompan_filter(args, anti_jitter: bool) -> str:
    """Crop to the output aspect (zoompan stretches to s=WxH), optionally upscale 4x, then the
    usual centred zoom; the zoom step reaches about 1.18 at the last frame, mid-way in
    datakit's default zoom range (1.1 to 1.25)."""
    width, height = parse_size(args.size)
    step = round(0.175 / args.frames, 4)
    crop = f"crop='min(iw,ih*{width}/{height})':'min(ih,iw*{height}/{width})'"
    scale = "scale=4*iw:-1," if anti_jitter else ""
    zoom = (f"zoompan=z='min(zoom+{step},1.25)':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)'"
            f":d={args.frames}:s={width}x{height}:fps={args.fps:g}")
    return f"{crop},{scale}{zoom}"


def ffmpeg_command(ffmpeg: str, photo: Path, target: Path, args, anti_jitter: bool) -> list[str]:
    return [ffmpeg, "-v", "error", "-nostdin", "-y", "-threads", "1", "-i", str(photo),
            "-filter_threads", "1", "-vf", zoompan_filter(args, anti_jitter),
            "-frames:v", str(args.frames), "-c:v", "libx264", "-threads", "1", "-crf", "18",
            "-preset", "medium", "-pix_fmt", "yuv420p", str(target)]


def run_ffmpeg(ffmpeg: str, photos: list[Path], out: Path, args, anti_jitter: bool) -> dict:
    """One ffmpeg process per photo, `args.workers` of them at a time (as `xargs -P 2`)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def one(photo: Path) -> None:
        command = ffmpeg_command(ffmpeg, photo, out / f"{photo.stem}.mp4", args, anti_jitter)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(one, photos))
    seconds = time.perf_counter() - started
    example = ffmpeg_command(ffmpeg, Path("IMG.jpg"), Path("OUT.mp4"), args, anti_jitter)
    sizes = [p.stat().st_size for p in out.glob("*.mp4")]
    return {"seconds": seconds, "clips": len(sizes), "mean_kb": float(np.mean(sizes)) / 1000,
            "command": " ".join(["ffmpeg", *example[1:]])}


# --------------------------------------------------------------------------------------------
# 2. Smoothness


def decode_gray(data: bytes | Path) -> list[np.ndarray]:
    import av

    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with av.open(source) as container:
        return [f.to_ndarray(format="gray").astype(np.float32) for f in container.decode(video=0)]


def ecc_affine(template: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """2x3 affine A with moving(A p) ~ template(p), coarse-to-fine (half, then full size)."""
    import cv2

    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-7)
    warp = np.eye(2, 3, dtype=np.float32)
    half_t = cv2.resize(template, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    half_m = cv2.resize(moving, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    try:
        _, warp = cv2.findTransformECC(half_t, half_m, warp, cv2.MOTION_AFFINE, criteria, None, 3)
    except cv2.error:
        warp = np.eye(2, 3, dtype=np.float32)
    # Half-size pixel centres: p_half = (p_full + 0.5) / 2 - 0.5 -> rescale the translation.
    linear = warp[:, :2]
    offset = warp[:, 2] * 2 + 0.5 * (linear.sum(axis=1) - 1)
    warp = np.hstack([linear, offset[:, None]]).astype(np.float32)
    _, warp = cv2.findTransformECC(template, moving, warp, cv2.MOTION_AFFINE, criteria, None, 3)
    return warp.astype(np.float64)


def centre_path(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Frame k's centre in frame 0's pixel coordinates, and frame k's scale relative to frame 0
    (chaining the frame-to-frame ECC fits)."""
    height, width = frames[0].shape
    centre = np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
    to_first = np.eye(3)
    centres, scales = [centre[:2].copy()], [1.0]
    for previous, current in zip(frames, frames[1:], strict=False):
        step = np.vstack([ecc_affine(current, previous), [0, 0, 1]])  # current -> previous
        to_first = to_first @ step
        centres.append((to_first @ centre)[:2])
        scales.append(float(np.sqrt(abs(np.linalg.det(to_first[:2, :2])))))
    return np.array(centres), np.array(scales)


def jitter(frames: list[np.ndarray], degree: int = 3, zoom_degree: int = 5) -> dict:
    """RMS distance (pixels) of the centre path from its best degree-3 polynomial, and the same
    for the log of the zoom (degree 5: datakit's cosine ease-in-out zoom is not a cubic),
    expressed as the displacement it causes at the frame's side edge."""
    centres, scales = centre_path(frames)
    t = np.arange(len(centres), dtype=np.float64)
    residual = np.stack([c - np.polyval(np.polyfit(t, c, degree), t) for c in centres.T], 1)
    log_scale = np.log(scales)
    zoom_res = log_scale - np.polyval(np.polyfit(t, log_scale, zoom_degree), t)
    half_width = frames[0].shape[1] / 2
    return {"centre_rms_px": float(np.sqrt(np.mean(np.sum(residual**2, axis=1)))),
            "zoom_edge_rms_px": float(np.sqrt(np.mean(zoom_res**2)) * half_width),
            "zoom_total": float(scales[0] / scales[-1])}


def datakit_videos(out: Path) -> list[tuple[str, bytes]]:
    videos = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".mp4"):
                    videos.append((member.name[:-4], tar.extractfile(member).read()))
    return sorted(videos)


def summarize(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "median": float(np.median(values)),
            "max": float(np.max(values)), "n": len(values)}


def smoothness(sources: dict[str, list], limit: int) -> dict:
    results = {}
    for name, videos in sources.items():
        fits = [jitter(decode_gray(video)) for video in videos[:limit]]
        results[name] = {key: summarize([f[key] for f in fits]) for key in fits[0]}
    return results


# --------------------------------------------------------------------------------------------
# 3. The same picture


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def picture_check(clips, args) -> dict:
    """PSNR (all three planes) of the frames datakit hands x264 against those of the renderer
    before issue 20 (bicubic RGB `render_clip` through PyAV's rgb24 -> yuv420p swscale)."""
    import av
    from av.video.reformatter import VideoReformatter

    from synthesize.render import render_clip, render_clip_yuv420p

    width, height = parse_size(args.size)
    reformatter = VideoReformatter()
    values = []
    for _, image, path in clips:
        before = np.stack([
            reformatter.reformat(av.VideoFrame.from_ndarray(f, format="rgb24"),
                                 format="yuv420p").to_ndarray()
            for f in render_clip(image, path, width, height, args.frames)])
        now = np.stack(list(render_clip_yuv420p(image, path, width, height, args.frames)))
        values.append(psnr(before, now))
    return {"psnr_db": summarize(values) | {"min": float(np.min(values))}}


def reference_check(out: Path, reference: Path, clips, args) -> dict:
    """Against a pan-zoom output made by an earlier version on the same photos: decoded PSNR
    of each clip, and whether the frames before issue 20 (`render_clip` + swscale) encode to
    the reference's very bytes (they should: that is what it ran)."""
    from datakit.io.video import encode_video
    from synthesize.render import render_clip

    width, height = parse_size(args.size)
    ours, theirs = dict(datakit_videos(out)), dict(datakit_videos(reference))
    common = sorted(set(ours) & set(theirs))
    decoded = [psnr(np.stack(decode_gray(ours[k])), np.stack(decode_gray(theirs[k])))
               for k in common]
    same, nudged = [], []
    rng = np.random.default_rng(0)
    for photo, image, path in clips[:4]:
        old = np.stack(list(render_clip(image, path, width, height, args.frames)))
        same.append(encode_video(old, args.fps, crf=18, preset="medium", threads=1)
                    == theirs.get(Path(photo).stem))
        # 0.1% of the samples one level up: how far x264 alone moves the output then
        old = np.minimum(old.astype(np.int16) + (rng.random(old.shape) < 0.001), 255)
        again = encode_video(old.astype(np.uint8), args.fps, crf=18, preset="medium",
                             threads=1)
        nudged.append(psnr(np.stack(decode_gray(again)),
                           np.stack(decode_gray(theirs[Path(photo).stem]))))
    return {"clips": len(common), "decoded_luma_psnr_db": summarize(decoded),
            "nudged_luma_psnr_db": summarize(nudged),
            "old_renderer_gives_reference_bytes": f"{sum(same)} of {len(same)}"}


def same_bytes(a: Path, b: Path) -> bool:
    """The same clips, bit for bit (mp4, txt and json of every key)."""
    def members(out: Path) -> dict:
        found = {}
        for shard in sorted((out / "shards").glob("*.tar")):
            with tarfile.open(shard) as tar:
                found.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()
                              if m.isfile()})
        return found

    return members(a) == members(b) and bool(members(a))


def same_videos(a: Path, b: Path) -> bool:
    return datakit_videos(a) == datakit_videos(b) and bool(datakit_videos(a))


# --------------------------------------------------------------------------------------------
# 4. Start-up


def best_of(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return min(times)


def startup_times(repeats: int = 5) -> dict:
    python = sys.executable
    # What a forkserver worker imports to run its first clip, and what the parent adds.
    worker_imports = ("import synthesize.pan_zoom, datakit.run.local_engine, datakit.io.images, "
                      "datakit.run.shards, datakit.io.video, manifests.schema, cv2, av")
    return {
        "python_bare_s": best_of([python, "-c", "pass"], repeats),
        "datakit_help_s": best_of(datakit_command() + ["--help"], repeats),
        "datakit_pan_zoom_help_s": best_of(datakit_command() + ["pan-zoom", "--help"], repeats),
        "import_datakit_cli_s": best_of([python, "-c", "import datakit.cli"], repeats),
        "import_worker_chain_s": best_of([python, "-c", worker_imports], repeats),
    }


# --------------------------------------------------------------------------------------------


def machine() -> dict:
    import cv2

    try:
        import av

        av_version = av.__version__
    except ImportError:  # pragma: no cover
        av_version = None
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": list(os.getloadavg()),
            "python": platform.python_version(),
            "opencv": cv2.__version__, "pyav": av_version, "platform": platform.platform()}


def spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(np.min(values)),
            "max": float(np.max(values)), "all": [round(v, 4) for v in values]}


def throughput(work: Path, photos: list[Path], ffmpeg: str, args) -> dict:
    """Every tool once per repeat, interleaved, so each repeat's ratios are side by side."""
    (work / "one").mkdir(exist_ok=True)
    shutil.copy(photos[0], work / "one" / photos[0].name)
    repeats = []
    for repeat in range(args.repeats):
        runs = {}
        for mode in ("keep", "flag"):
            runs[f"one_{mode}"] = run_datakit(work / "one", work / f"dk_one_{mode}", args,
                                              watermarks=mode)
            runs[f"datakit_{mode}"] = run_datakit(work / "photos", work / f"dk_{mode}_{repeat}",
                                                  args, watermarks=mode)
        runs["floor"] = run_floor(args.workers)
        runs["floor_decode"] = run_floor(args.workers, decode=True)
        runs["zoompan_plain"] = run_ffmpeg(ffmpeg, photos, work / "zp_plain", args, False)
        runs["zoompan_anti_jitter"] = run_ffmpeg(ffmpeg, photos, work / "zp_anti", args, True)
        rates = {name: (r["stats"]["this_run"].get("ok", 0) if "stats" in r else r["clips"])
                 / r["seconds"] for name, r in runs.items()}
        clips = len(photos)
        for mode in ("keep", "flag"):
            extra = runs[f"datakit_{mode}"]["seconds"] - runs[f"one_{mode}"]["seconds"]
            rates[f"steady_{mode}"] = (clips - 1) / extra
        repeats.append({"seconds": {k: r["seconds"] for k, r in runs.items()}, "rates": rates,
                        "mean_kb": {k: r["mean_kb"] for k, r in runs.items()}})
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v:.2f}/s" for k, v in rates.items()),
              flush=True)
    return {"repeats": repeats, "commands": {k: r["command"] for k, r in runs.items()}}


def ratios_of(repeats: list[dict]) -> dict:
    """Per repeat, then the median and spread over the repeats."""
    def each(top: str, bottom: str) -> dict:
        return spread([r["rates"][top] / r["rates"][bottom] for r in repeats])

    return {
        "steady_keep_over_floor": each("steady_keep", "floor"),
        "steady_flag_over_floor": each("steady_flag", "floor"),
        "steady_keep_over_floor_decode": each("steady_keep", "floor_decode"),
        "steady_flag_over_floor_decode": each("steady_flag", "floor_decode"),
        "floor_decode_over_floor": each("floor_decode", "floor"),
        "command_keep_over_anti_jitter": each("datakit_keep", "zoompan_anti_jitter"),
        "command_flag_over_anti_jitter": each("datakit_flag", "zoompan_anti_jitter"),
        "command_flag_over_plain": each("datakit_flag", "zoompan_plain"),
        "flag_over_keep_steady": each("steady_flag", "steady_keep"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=120, help="number of photos (default 120)")
    parser.add_argument("--photo-width", type=int, default=1200,
                        help="approximate photo width in pixels (default 1200)")
    parser.add_argument("--size", default="512x320", help="output WIDTHxHEIGHT (512x320)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (16)")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second (8)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for each tool (datakit --workers, parallel ffmpegs, "
                        "the x264 floor)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="throughput runs per tool, interleaved; the median is reported "
                        "(default 3)")
    parser.add_argument("--smooth-clips", type=int, default=24,
                        help="zoom-in clips per tool for the smoothness fit (default 24)")
    parser.add_argument("--reference", type=Path,
                        help="a pan-zoom output an earlier version made of the same photos "
                        "(--workdir's photos, --seed 0): decoded PSNR against it")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray engine run")
    parser.add_argument("--cpu-only", action="store_true",
                        help="only the CPU time per clip in one process (1b), quick and "
                        "robust on a shared machine")
    parser.add_argument("--quick", action="store_true",
                        help="12 photos, 1 repeat, 6 clips for smoothness")
    parser.add_argument("--workdir", type=Path, help="keep photos and outputs here")
    parser.add_argument("--json", type=Path, help="save the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.repeats, args.smooth_clips = min(args.photos, 12), 1, 6

    import cv2
    import imageio_ffmpeg

    cv2.setNumThreads(1)  # as in datakit's workers; and no OpenCV thread pool across fork
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    temp = None
    if args.workdir is None:
        temp = tempfile.TemporaryDirectory(prefix="bench_pan_zoom_")
        args.workdir = Path(temp.name)
    work = args.workdir
    started = time.perf_counter()
    load_start = list(os.getloadavg())
    try:
        photos = make_photos(work / "photos", args.photos, args.photo_width)
        print(f"{len(photos)} photos in {work / 'photos'}", flush=True)
        clips = clip_paths(work / "photos", args)
        prepare_floor(clips, args)
        if args.cpu_only:
            cpu = cpu_per_clip(work / "photos", args)
            print_cpu(cpu)
            return {"cpu": cpu}

        # 1. Throughput
        print(f"\n1. Throughput ({args.size}, {args.frames} frames at {args.fps:g} fps, libx264 "
              f"crf 18 medium yuv420p, {args.workers} processes, {len(photos)} photos)")
        speed = throughput(work, photos, ffmpeg, args)
        ratios = ratios_of(speed["repeats"])
        rates = {k: spread([r["rates"][k] for r in speed["repeats"]])
                 for k in speed["repeats"][0]["rates"]}
        print(f"{'':<24}{'clips/s median':>15}{'min':>8}{'max':>8}")
        for name, r in rates.items():
            print(f"{name:<24}{r['median']:>15.2f}{r['min']:>8.2f}{r['max']:>8.2f}")
        for name, r in ratios.items():
            each = ", ".join(f"{v:.2f}" for v in r["all"])
            print(f"  {name}: {r['median']:.2f} (repeats: {each})")

        cpu = cpu_per_clip(work / "photos", args)
        print_cpu(cpu)

        # 2. Smoothness on zoom-in clips
        run_datakit(work / "photos", work / "dk_zoom_in", args, motions="zoom-in",
                    watermarks="keep")
        smooth = smoothness({
            "datakit": [v for _, v in datakit_videos(work / "dk_zoom_in")],
            "zoompan_plain": sorted((work / "zp_plain").glob("*.mp4")),
            "zoompan_anti_jitter": sorted((work / "zp_anti").glob("*.mp4")),
        }, args.smooth_clips)
        dk_rms = smooth["datakit"]["centre_rms_px"]["mean"]
        smooth_ratios = {
            "plain_over_datakit": smooth["zoompan_plain"]["centre_rms_px"]["mean"] / dk_rms,
            "anti_jitter_over_datakit":
                smooth["zoompan_anti_jitter"]["centre_rms_px"]["mean"] / dk_rms,
        }
        print_smoothness(smooth, smooth_ratios)

        # 3. The same picture
        picture = picture_check(clips, args)
        last = args.repeats - 1
        one_worker = run_datakit(work / "photos", work / "dk_keep_w1", args, watermarks="keep",
                                 workers=1)
        identical = {
            "repeats": all(same_bytes(work / f"dk_{mode}_0", work / f"dk_{mode}_{r}")
                           for mode in ("keep", "flag") for r in range(1, args.repeats)),
            "keep_vs_flag_videos": same_videos(work / "dk_keep_0", work / f"dk_flag_{last}"),
            "workers_1_vs_2": same_bytes(work / "dk_keep_w1", work / "dk_keep_0"),
        }
        if not args.no_ray:
            ray_run = run_datakit(work / "photos", work / "dk_keep_ray", args, watermarks="keep",
                                  engine="ray")
            identical["local_vs_ray"] = same_bytes(work / "dk_keep_ray", work / "dk_keep_0")
            identical["ray_seconds"] = ray_run["seconds"]
        identical["one_worker_seconds"] = one_worker["seconds"]
        if args.reference:
            picture["reference"] = reference_check(work / "dk_keep_0", args.reference, clips, args)
        print(f"\n3. The same picture: PSNR against the renderer before issue 20 (x264's input, "
              f"{len(clips)} clips): min {picture['psnr_db']['min']:.1f} dB, median "
              f"{picture['psnr_db']['median']:.1f} dB")
        if "reference" in picture:
            print(f"  against {args.reference}: {picture['reference']}")
        print("  byte-identical: " + ", ".join(f"{k} {v}" for k, v in identical.items()
                                               if not k.endswith("seconds")))

        # 4. Start-up
        startup = startup_times()
        print("\n4. Start-up: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in startup.items()))
    finally:
        if temp is not None:
            temp.cleanup()
    figures = {
        "machine": machine(),
        "settings": {"photos": args.photos, "photo_width": args.photo_width, "size": args.size,
                     "frames": args.frames, "fps": args.fps, "workers": args.workers,
                     "repeats": args.repeats, "smooth_clips": args.smooth_clips,
                     "codec": "libx264", "pix_fmt": "yuv420p", "crf": 18, "preset": "medium",
                     "ffmpeg": ffmpeg_version(ffmpeg), "load_average_start": load_start},
        "throughput": speed, "rates": rates, "ratios": ratios, "cpu": cpu,
        "smoothness": smooth, "smoothness_ratios": smooth_ratios,
        "picture": picture, "identical": identical, "startup": startup,
        "targets": {
            "steady_keep_0_9_of_floor": ratios["steady_keep_over_floor"]["median"] >= 0.9,
            "steady_flag_0_9_of_floor": ratios["steady_flag_over_floor"]["median"] >= 0.9,
            "command_keep_1_5x_anti_jitter":
                ratios["command_keep_over_anti_jitter"]["median"] >= 1.5,
            "command_flag_1_5x_anti_jitter":
                ratios["command_flag_over_anti_jitter"]["median"] >= 1.5,
            "smoothness_10x_plain": smooth_ratios["plain_over_datakit"] >= 10,
            "psnr_50db_before": picture["psnr_db"]["min"] >= 50,
            "byte_identical": all(v for k, v in identical.items() if not k.endswith("seconds")),
            "cli_start_under_0_5s": startup["datakit_help_s"] < 0.5,
        },
        "bench_seconds": time.perf_counter() - started,
    }
    print(f"\nload average at start {load_start}, at end {list(os.getloadavg())}")
    print("targets: " + ", ".join(f"{k}={'met' if v else 'MISSED'}"
                                  for k, v in figures["targets"].items()))
    print(f"benchmark took {figures['bench_seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures saved to {args.json}")
    return figures


def ffmpeg_version(ffmpeg: str) -> str:
    result = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True)
    return result.stdout.splitlines()[0] if result.stdout else "unknown"


def print_smoothness(smooth: dict, ratios: dict) -> None:
    print("\n2. Smoothness of zoom-in clips (ECC affine, centre path vs cubic fit; pixels)")
    print(f"{'tool':<22}{'clips':>6}{'centre RMS mean':>17}{'median':>9}{'max':>9}"
          f"{'zoom edge RMS':>15}{'zoom':>7}")
    for name, r in smooth.items():
        c, z = r["centre_rms_px"], r["zoom_edge_rms_px"]
        print(f"{name:<22}{c['n']:>6}{c['mean']:>17.4f}{c['median']:>9.4f}{c['max']:>9.4f}"
              f"{z['mean']:>15.4f}{r['zoom_total']['mean']:>7.3f}")
    for name, value in ratios.items():
        print(f"  {name}: {value:.1f}x")


if __name__ == "__main__":
    main()
