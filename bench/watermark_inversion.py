"""The strip with and without the faint-mark inversion (`synthesize/watermark/matte.py`),
side by side, on the real bench's clips under marks drawn with other seeds than the bench's
own (its real part draws them with `--seed`, 0 by default, and the inversion's gates were
set on seeds 0-4).

Per clip and seed, each text mark and centre word at opacity >= 0.3 (`real_marks`) is
blended in, detected with the defaults, and, where found, stripped twice (crop band 0, so
every pixel has a truth): with the inversion, and with `invert_faint_mark` answering None
(the moments fill, as before the twentieth round). Prints PSNR in the true mask for both
and for ffmpeg's `delogo` on the found box, each mark that changed, and the means.

    python bench/watermark_inversion.py --seeds 5,6 [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import signal
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from watermark_marks import real_marks
from watermark_media import SEGMENTS, real_clips
from watermark_metrics import delogo, masked_psnr
from watermark_real import detect, overlaps

KINDS = ("text", "centre")


def clip_rows(task) -> list[dict]:
    """Every found mark of one clip and seed: PSNR in the mark, with and without."""
    import synthesize.watermark.removal as removal
    from synthesize.watermark import WatermarkConfig

    segment, frames, seed = task
    inversion = removal.invert_faint_mark
    config = WatermarkConfig(action="strip", crop_band=0.0)
    index = SEGMENTS.index(segment)
    rows = []
    for overlay in real_marks(frames.shape[2], frames.shape[1],
                              np.random.default_rng([seed, index])):
        if overlay.kind not in KINDS or overlay.opacity < 0.3:
            continue
        marked = overlay.blend(frames)
        detection, fields, _ = detect(marked)
        if not (detection.found and detection.mask is not None
                and overlaps(fields["watermark_box"], overlay.mask)):
            continue
        row = {"name": f"{segment.name}/{seed}/{overlay.label}",
               "delogo": masked_psnr(delogo(marked, detection.box), frames, overlay.mask)}
        for key, invert in (("moments", lambda *args: None), ("inverted", inversion)):
            removal.invert_faint_mark = invert
            try:
                stripped, action, _ = removal.strip(marked, detection, config)
            finally:
                removal.invert_faint_mark = inversion
            row[key] = masked_psnr(stripped, frames, overlay.mask)
            row[f"{key}_action"] = action
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="5,6",
                        help="mark seeds, comma-separated (default: 5,6, held out)")
    parser.add_argument("--segments", default="",
                        help="clip segments to use (e.g. bikes-1,vtest-3); all by default")
    parser.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    parser.add_argument("--json", type=Path, help="write every stripped mark's row here")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: whole numbers, comma-separated, not {args.seeds!r}")
    wanted = set(args.segments.split(",")) - {""}
    unknown = wanted - {segment.name for segment in SEGMENTS}
    if unknown:
        parser.error(f"no such segment: {', '.join(sorted(unknown))} (one of "
                     f"{', '.join(segment.name for segment in SEGMENTS)})")
    tasks = [(segment, frames, seed) for segment, frames, _ in real_clips() for seed in seeds
             if not wanted or segment.name in wanted]
    # the workers leave Ctrl-C to this process, which ends the pool
    with get_context("spawn").Pool(args.workers, signal.signal,
                                   (signal.SIGINT, signal.SIG_IGN)) as pool:
        rows = [row for rows in pool.imap(clip_rows, tasks) for row in rows]
    for row in rows:
        change = row["inverted"] - row["moments"]
        if abs(change) > 0.01:
            print(f"{row['name']:40s} moments {row['moments']:5.2f} inverted "
                  f"{row['inverted']:5.2f} ({change:+.2f}) delogo {row['delogo']:5.2f}")
    changed = [r for r in rows if abs(r["inverted"] - r["moments"]) > 0.01]
    print(f"{len(rows)} marks found and stripped (seeds {args.seeds}); the inversion changed "
          f"{len(changed)}: {sum(r['inverted'] > r['moments'] for r in changed)} gained, "
          f"{sum(r['inverted'] < r['moments'] for r in changed)} lost")
    for label, part in (("all", rows), *((kind, [r for r in rows if f"/{kind}" in r["name"]])
                                         for kind in ("text", "centre"))):
        if part:
            means = {key: float(np.mean([r[key] for r in part]))
                     for key in ("moments", "inverted", "delogo")}
            print(f"  {label:7s} {len(part):3d} marks: moments {means['moments']:.2f}, inverted "
                  f"{means['inverted']:.2f} ({means['inverted'] - means['moments']:+.2f} dB), "
                  f"delogo {means['delogo']:.2f} dB in the mark")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("stopped (Ctrl-C): nothing was written; a rerun starts over") from None
