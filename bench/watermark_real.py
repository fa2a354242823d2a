"""The watermark bench on real footage: clean real clips and photos, then the same with
realistic marks (`watermark_marks.real_marks`), through the detector with its defaults
(`detect_video(frames, WatermarkConfig())`, what the pipeline's watermark step runs).

Per clean clip: flagged or not (with the score, box and reason the json would get),
detection seconds against encoding the clip (x264 medium, crf 18, one thread, side by side
in one process), and what the strip step (`strip`, its safety check included) does to a
flagged one (PSNR of its output against its input: 99 when the pixels are unchanged); then
all clean clips, encoded, go through `datakit watermark` (default strip) as one shard, and
the bench checks their mp4 bytes come back unchanged. Per marked clip: found, and found
where the mark is (the box overlaps the true mask); for some of the found marks (opacity
>= 0.3), the strip (crop band 0, so the pixels have a truth) against ffmpeg `delogo` on the
found box and on the true box, PSNR inside the true mask and outside it, against the clean
clip, and the same once the mark is burned in before compression, as footage carries one
(`encoded_strip`). Every clean and marked clip is also judged as uploaded (`uploaded`: x264
crf 23, decoded), for recall and precision on compressed marks. For a missed one, the
evidence that was there to be found (`watermark_ceiling`), and over all of them the recall
a perfect judge of that evidence would reach. Photos: clean ones flagged, and one mark
each found. The held-out clips and photos are summed up on their own.
"""

from __future__ import annotations

import time

import numpy as np
from watermark_ceiling import ceiling, evidence_there, print_ceiling
from watermark_marks import real_marks
from watermark_media import (
    ASSETS,
    PHOTOS,
    REAL_MARKED,
    SEGMENTS,
    asset_path,
    photo_pixels,
    real_clips,
)
from watermark_metrics import delogo, detection_counts, masked_psnr, psnr


def detect(frames: np.ndarray) -> tuple[object, dict, float]:
    """What the pipeline's flag step finds with the defaults (`WatermarkConfig()`): the
    detection, the json fields it would write, seconds."""
    from synthesize.watermark import WatermarkConfig, detect_video

    started = time.perf_counter()
    detection = detect_video(frames if frames.ndim == 4 else frames[None], WatermarkConfig())
    seconds = time.perf_counter() - started
    fields = {"watermark_score": round(float(detection.score), 4),
              "watermark_box": list(detection.box) if detection.found and detection.box
              else None,
              "watermark_action": "flagged" if detection.found else "clean",
              "watermark_reason": getattr(detection, "reason", None)}
    return detection, fields, seconds


def overlaps(box, mask: np.ndarray) -> bool:
    """Whether a found box [x0, y0, x1, y1] covers any pixel of the true mask."""
    if not box:
        return False
    x0, y0, x1, y1 = box
    return bool(mask[max(0, y0):y1, max(0, x0):x1].any())


def clip_task(task) -> dict:
    """One clean clip and its marked versions: every figure the report needs. The strip is
    measured on `strip_marks` of the found marks (opacity >= 0.3), taken in turn by the
    clip's index so that every kind of mark gets its share."""
    from datakit.io.video import encode_video
    from synthesize.watermark import WatermarkConfig, strip

    segment, frames, fps, seed, strip_marks = task
    index = SEGMENTS.index(segment)
    detection, fields, first_s = detect(frames)  # the first call also loads models
    started = time.perf_counter()
    mp4 = encode_video(frames, fps, crf=18, preset="medium", threads=1)
    encode_s = time.perf_counter() - started
    detect_s = min(first_s, detect(frames)[2])
    clean = {"name": segment.name, "held_out": segment.held_out, "scene": segment.scene,
             "size": f"{frames.shape[2]}x{frames.shape[1]}", "frames": len(frames),
             "flagged": detection.found, "fields": fields, "detect_s": detect_s,
             "encode_s": encode_s, "mp4": mp4, "fps": fps, "strip_action": "clean",
             "strip_psnr": 99.0}
    if detection.found:  # what `--watermarks strip` would do to this clean clip
        stripped, clean["strip_action"], _ = strip(frames, detection,
                                                   WatermarkConfig(action="strip"))
        clean["strip_psnr"] = psnr(stripped, frames)
    clean_upload = uploaded(frames, fps)
    upload_detection, upload_fields, _ = detect(clean_upload)
    clean["uploaded"] = {"flagged": upload_detection.found, "fields": upload_fields}
    marks = real_marks(frames.shape[2], frames.shape[1], np.random.default_rng([seed, index]))
    order = [marks[(index + k) % len(marks)].label for k in range(len(marks))]
    to_strip = set(order[:strip_marks])
    rows = []
    for overlay in marks:
        marked = overlay.blend(frames)
        detection, fields, detect_s = detect(marked)
        row = {"name": f"{segment.name}/{overlay.label}", "held_out": segment.held_out,
               "kind": overlay.kind, "opacity": overlay.opacity, "true_box": overlay.box,
               "fields": fields, "detect_s": detect_s, "flagged": detection.found,
               "located": overlaps(fields["watermark_box"], overlay.mask),
               "camera_moved": bool(detection.details.get("camera_moved"))}
        marked_upload = uploaded(marked, fps)
        upload_detection, upload_fields, _ = detect(marked_upload)
        row["uploaded"] = {"flagged": upload_detection.found, "fields": upload_fields,
                           "located": overlaps(upload_fields["watermark_box"], overlay.mask)}
        if overlay.label in to_strip and row["located"] and overlay.opacity >= 0.3:
            row.update(strip_figures(marked, frames, overlay, detection))
            row["encoded"] = encoded_strip(marked_upload, clean_upload, overlay,
                                           upload_detection, row["uploaded"]["located"])
        if not row["located"]:
            row["evidence_there"] = evidence_there(marked, frames, overlay, row["camera_moved"])
        rows.append(row)
    print(f"  done {segment.name}: clean clip {clean['fields']['watermark_action']}, marks found "
          f"{sum(r['located'] for r in rows)}/{len(rows)}", flush=True)
    return {"clean": clean, "marked": rows}


def strip_figures(marked: np.ndarray, clean: np.ndarray, overlay, detection) -> dict:
    """The strip's output (crop band 0, so the pixels have a truth) against the clean clip,
    inside and outside the true mask, with `delogo` on the found and on the true box."""
    from synthesize.watermark import WatermarkConfig, strip

    stripped, action, _ = strip(marked, detection, WatermarkConfig(action="strip",
                                                                   crop_band=0.0))
    mask = overlay.mask
    return {"strip_action": action,
            "psnr_mark_none": masked_psnr(marked, clean, mask),
            "psnr_mark_datakit": masked_psnr(stripped, clean, mask),
            "psnr_outside_datakit": masked_psnr(stripped, clean, ~mask),
            "psnr_mark_delogo": masked_psnr(delogo(marked, detection.box), clean, mask),
            "psnr_mark_delogo_true_box": masked_psnr(delogo(marked, overlay.box), clean, mask),
            "psnr_mark_inpaint_true_mask": masked_psnr(inpaint(marked, mask), clean, mask)}


UPLOAD_CRF = 23  # x264's default: the mark burned in, then the clip compressed, as uploaded


def uploaded(frames: np.ndarray, fps: float) -> np.ndarray:
    """The frames as footage that carries a mark comes: through x264 (crf UPLOAD_CRF,
    preset fast) and decoded."""
    from datakit.io.video import encode_video, read_frames

    return read_frames(encode_video(frames, fps, crf=UPLOAD_CRF, preset="fast", threads=1))


def encoded_strip(marked: np.ndarray, clean: np.ndarray, overlay, detection,
                  located: bool) -> dict:
    """The strip of a mark burned in before compression (`uploaded` marked and clean
    clips, the `detection` on the marked one): stripped (crop band 0) and compared in the
    true mask with the clean clip through the same encoder, beside `delogo` on the found
    box."""
    from synthesize.watermark import WatermarkConfig, strip

    if not located:
        return {"located": False}
    stripped, action, _ = strip(marked, detection, WatermarkConfig(action="strip",
                                                                   crop_band=0.0))
    return {"located": True, "strip_action": action,
            "psnr_mark_none": masked_psnr(marked, clean, overlay.mask),
            "psnr_mark_datakit": masked_psnr(stripped, clean, overlay.mask),
            "psnr_mark_delogo": masked_psnr(delogo(marked, detection.box), clean,
                                            overlay.mask)}


def inpaint(frames: np.ndarray, mask: np.ndarray, margin: int = 3) -> np.ndarray:
    """An oracle for a clip no frame reveals: OpenCV's Telea inpainting of each frame over
    the true mask (grown by 3 pixels, the strip's margin until the eighteenth round, kept
    so that the figure compares across rounds), as if detection were perfect."""
    import cv2

    hole = cv2.dilate(mask.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8))
    return np.stack([cv2.inpaint(frame, hole, 3, cv2.INPAINT_TELEA) for frame in frames])


def photo_task(task) -> dict:
    """One clean photo, and the same photo with one of the real marks (opacity >= 0.3)."""
    photo, index, seed = task
    image = photo_pixels(photo)
    detection, fields, detect_s = detect(image)
    rng = np.random.default_rng([seed, index])
    marks = real_marks(image.shape[1], image.shape[0], rng)
    overlay = marks[index % len(marks)]
    _, marked_fields, _ = detect(overlay.blend(image))
    return {"name": photo.name, "held_out": photo.held_out,
            "size": f"{image.shape[1]}x{image.shape[0]}",
            "flagged": detection.found, "fields": fields,
            "detect_s": detect_s, "mark": overlay.label, "opacity": overlay.opacity,
            "mark_fields": marked_fields,
            "mark_found": marked_fields["watermark_action"] == "flagged",
            "mark_located": overlaps(marked_fields["watermark_box"], overlay.mask)}


def real_mark_task(task) -> dict:
    """A photo whose publisher marked it: found as a photo, and as a still clip of it (24
    frames with sensor noise, as a tripod shot of the print would be)."""
    (photo, box), seed = task
    image = photo_pixels(photo)
    mask = np.zeros(image.shape[:2], bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    rng = np.random.default_rng([seed, 17])
    frames = np.clip(image[None].astype(np.float32) + rng.normal(0, 2.0, (24, *image.shape)),
                     0, 255).round().astype(np.uint8)
    row = {"name": photo.name, "true_box": list(box)}
    for part, pixels in (("photo", image), ("still_clip", frames)):
        _, fields, _ = detect(pixels)
        row[part] = {"fields": fields, "located": overlaps(fields["watermark_box"], mask)}
    return row


def run_real(pool, seed: int, strip_marks: int = 2) -> dict:
    """Every real clip and photo, spread over the pool's workers; `strip_marks` marks per
    clip get the strip figures (0: detection only, and no shard run)."""
    tasks = [(segment, frames, fps, seed, strip_marks) for segment, frames, fps in real_clips()]
    clips = list(pool.imap_unordered(clip_task, tasks))
    clips.sort(key=lambda c: [s.name for s in SEGMENTS].index(c["clean"]["name"]))
    for photo in PHOTOS:  # fetch each package once, here, before the workers need it
        if photo.source in ASSETS:
            asset_path(photo.source)
    photos = pool.map(photo_task, [(p, i, seed) for i, p in enumerate(PHOTOS)])
    clean = [c["clean"] for c in clips]
    shards = shard_round_trip(clean) if strip_marks else None
    for row in clean:
        del row["mp4"]
    summary = summarise_real(clean, [r for c in clips for r in c["marked"]], photos)
    summary["shard_round_trip"] = shards
    summary["real_marked"] = pool.map(real_mark_task, [(item, seed) for item in REAL_MARKED])
    return summary


def shard_round_trip(clean: list[dict]) -> dict:
    """The clean clips, encoded, in one shard through `datakit watermark SRC --out OUT` (its
    default is strip): which keys come back with other mp4 bytes, and each one's action."""
    import io
    import json
    import os
    import subprocess
    import sys
    import tarfile
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="wm-bench-shard-") as folder:
        src, out = Path(folder) / "src", Path(folder) / "out"
        src.mkdir()
        with tarfile.open(src / "00000.tar", "w") as tar:
            for row in clean:
                for extension, data in (("mp4", row["mp4"]),
                                        ("json", json.dumps({"fps": row["fps"]}).encode())):
                    member = tarfile.TarInfo(f"{row['name'].replace('-', '_')}.{extension}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
        env = {**os.environ, "PYTHONPATH": str(root)}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "datakit.cli", "watermark", str(src), "--out",
                        str(out)], check=True, env=env, capture_output=True)
        seconds = time.perf_counter() - started
        result = {}
        for tar_path in sorted(out.rglob("*.tar")):
            with tarfile.open(tar_path) as tar:
                for member in tar:
                    key, _, extension = member.name.rpartition("/")[2].partition(".")
                    result.setdefault(key, {})[extension] = tar.extractfile(member).read()
    changed, actions = [], {}
    for row in clean:
        key = row["name"].replace("-", "_")
        actions[row["name"]] = json.loads(result[key]["json"]).get("watermark_action")
        if result[key]["mp4"] != row["mp4"]:
            changed.append(row["name"])
    return {"changed": changed, "actions": actions, "seconds": seconds}


def box_coverage(found, true) -> float:
    """The share of the mark's true box inside the found box: a found box over part of a
    mark leaves the rest of it to a strip."""
    x0, y0 = max(found[0], true[0]), max(found[1], true[1])
    x1, y1 = min(found[2], true[2]), min(found[3], true[3])
    area = (true[2] - true[0]) * (true[3] - true[1])
    return max(0, x1 - x0) * max(0, y1 - y0) / area


def marked_counts(marked: list[dict], clean: list[dict]) -> dict:
    """Recall and precision of marks found where they are; a flag elsewhere on a marked clip
    is a false positive, as is a flagged clean clip."""
    located = sum(r["located"] for r in marked)
    wrong = sum(r["flagged"] and not r["located"] for r in marked)
    flagged = sum(r["flagged"] for r in clean)
    return {**detection_counts(located, len(marked), flagged + wrong, len(clean)),
            "flagged_elsewhere": wrong}


def summarise_real(clean: list[dict], marked: list[dict], photos: list[dict]) -> dict:
    summary: dict = {"clean_clips": clean, "marked_clips": marked, "photos": photos}
    for part, keep in (("all", lambda r: True), ("tuning", lambda r: not r["held_out"]),
                       ("held_out", lambda r: r["held_out"])):
        c = [r for r in clean if keep(r)]
        m = [r for r in marked if keep(r) and r["opacity"] >= 0.3]
        p = [r for r in photos if keep(r)]
        summary[part] = {
            "clean_clips_flagged": [r["name"] for r in c if r["flagged"]],
            "clean_clips": len(c),
            "photos_flagged": [r["name"] for r in p if r["flagged"]],
            "photos": len(p),
            "marked": marked_counts(m, c),
            "marked_photos": detection_counts(sum(r["mark_located"] for r in p), len(p),
                                              sum(r["flagged"] for r in p), len(p)),
        }
    summary["ceiling"] = ceiling(marked)
    covered = [box_coverage(r["fields"]["watermark_box"], r["true_box"])
               for r in marked if r["located"] and r["opacity"] >= 0.3]
    summary["box_coverage"] = {"median": float(np.median(covered)) if covered else None,
                               "under_0.7": sum(c < 0.7 for c in covered),
                               "found": len(covered)}
    summary["by_kind"] = {
        kind: marked_counts([r for r in marked if r["kind"] == kind and r["opacity"] >= 0.3], [])
        ["recall"] for kind in sorted({r["kind"] for r in marked})}
    summary["by_opacity"] = {
        f"{o:g}": marked_counts([r for r in marked if r["opacity"] == o], [])["recall"]
        for o in sorted({r["opacity"] for r in marked})}
    stripped = [r for r in marked if "psnr_mark_datakit" in r]
    keys = ("psnr_mark_none", "psnr_mark_datakit", "psnr_mark_delogo",
            "psnr_mark_delogo_true_box", "psnr_mark_inpaint_true_mask", "psnr_outside_datakit")
    summary["strip"] = {key: float(np.mean([r[key] for r in stripped])) if stripped else None
                        for key in keys}
    summary["strip"]["clips"] = len(stripped)
    summary["strip"]["refused"] = sum(r["strip_action"] == "flagged" for r in stripped)
    for camera, moved in (("moving_camera", True), ("still_camera", False)):
        rows = [r for r in stripped if r["camera_moved"] == moved]
        summary["strip"][camera] = {key: float(np.mean([r[key] for r in rows]))
                                    for key in keys} if rows else None
        if rows:
            summary["strip"][camera]["clips"] = len(rows)
    summary["uploaded"] = {
        "clean_clips_flagged": [r["name"] for r in clean if r["uploaded"]["flagged"]],
        "marked": marked_counts([r["uploaded"] for r in marked if r["opacity"] >= 0.3],
                                [r["uploaded"] for r in clean])}
    uploads = [r["encoded"] for r in stripped if r.get("encoded", {}).get("located")]
    summary["strip_encoded"] = {
        key: float(np.mean([r[key] for r in uploads])) if uploads else None
        for key in ("psnr_mark_none", "psnr_mark_datakit", "psnr_mark_delogo")}
    summary["strip_encoded"].update(
        clips=len(uploads), lost=sum(not r.get("encoded", {}).get("located", True)
                                     for r in stripped),
        refused=sum(r["strip_action"] == "flagged" for r in uploads))
    summary["clean_strip"] = {
        "changed": [r["name"] for r in clean if r["strip_psnr"] < 99],
        "lowest_psnr": min(r["strip_psnr"] for r in clean)}
    summary["cost"] = {"detect_s": float(np.mean([r["detect_s"] for r in clean])),
                       "encode_s": float(np.mean([r["encode_s"] for r in clean])),
                       "detect_marked_s": float(np.mean([r["detect_s"] for r in marked]))}
    return summary


def print_real(summary: dict) -> None:
    from watermark_metrics import counts

    print("== real footage (clean clips: camera video segments; photos as they are)")
    for part in ("all", "tuning", "held_out"):
        s = summary[part]
        print(f"[{part}] clean clips flagged: {len(s['clean_clips_flagged'])} / "
              f"{s['clean_clips']} {s['clean_clips_flagged']}")
        print(f"[{part}] clean photos flagged: {len(s['photos_flagged'])} / {s['photos']} "
              f"{s['photos_flagged']}")
        m = s["marked"]
        print(f"[{part}] marked clips, opacity >= 0.3: recall {m['recall']:.3f} precision "
              f"{m['precision']:.3f} ({m['true_pos']}/{m['marked']} found where they are; "
              f"false positives {m['false_pos']}: {len(s['clean_clips_flagged'])} clean clips, "
              f"{m['flagged_elsewhere']} marked clips flagged elsewhere)")
        print(f"[{part}] marked photos (one mark each): {counts(s['marked_photos'])}")
    print("recall by mark:", {k: round(v, 3) for k, v in summary["by_kind"].items()})
    print("recall by opacity:", {k: round(v, 3) for k, v in summary["by_opacity"].items()})
    for row in summary["clean_clips"]:
        f = row["fields"]
        print(f"  clean {row['name']:11s} {row['size']:8s} {row['frames']:3d} frames: "
              f"{f['watermark_action']} score {f['watermark_score']} box {f['watermark_box']}"
              f"{' ' + str(f.get('watermark_reason')) if f.get('watermark_reason') else ''}")
    for row in summary["photos"]:
        f = row["fields"]
        print(f"  photo {row['name']:20s} {row['size']:9s}: {f['watermark_action']} score "
              f"{f['watermark_score']} box {f['watermark_box']}; with {row['mark']}: "
              f"{'found' if row['mark_located'] else 'missed'}")
    missed = [r["name"] for r in summary["marked_clips"]
              if r["opacity"] >= 0.3 and not r["located"]]
    print(f"marks missed (opacity >= 0.3): {missed}")
    print_ceiling(summary["ceiling"], summary["marked_clips"])
    cover = summary["box_coverage"]
    if cover["found"]:
        print(f"found boxes cover the mark's true box: median {cover['median']:.2f}; under 0.7 "
              f"for {cover['under_0.7']} of {cover['found']} found marks")
    st = summary["strip"]
    if st["clips"]:
        print(f"strip, {st['clips']} marks found (crop band 0; {st['refused']} strips refused): "
              f"PSNR in the mark: none {st['psnr_mark_none']:.2f}, datakit "
              f"{st['psnr_mark_datakit']:.2f}, delogo found box {st['psnr_mark_delogo']:.2f} "
              f"({st['psnr_mark_datakit'] - st['psnr_mark_delogo']:+.2f} dB), delogo true box "
              f"{st['psnr_mark_delogo_true_box']:.2f}, inpainting the true mask (an oracle) "
              f"{st['psnr_mark_inpaint_true_mask']:.2f}; outside the mark: datakit "
              f"{st['psnr_outside_datakit']:.2f}")
        for camera in ("moving_camera", "still_camera"):
            part = st[camera]
            if part:
                print(f"  {camera.replace('_', ' ')}, {part['clips']} marks: datakit "
                      f"{part['psnr_mark_datakit']:.2f}, delogo found box "
                      f"{part['psnr_mark_delogo']:.2f} "
                      f"({part['psnr_mark_datakit'] - part['psnr_mark_delogo']:+.2f} dB), "
                      f"inpainting the true mask {part['psnr_mark_inpaint_true_mask']:.2f}")
    upload = summary["uploaded"]
    m = upload["marked"]
    print(f"marks burned in before compression (x264 crf {UPLOAD_CRF}, marked and clean "
          f"clips alike): clean clips flagged {len(upload['clean_clips_flagged'])} / "
          f"{len(summary['clean_clips'])} {upload['clean_clips_flagged']}; marked clips, "
          f"opacity >= 0.3: recall {m['recall']:.3f} precision {m['precision']:.3f} "
          f"({m['true_pos']}/{m['marked']} found where they are; "
          f"{m['flagged_elsewhere']} flagged elsewhere)")
    up = summary["strip_encoded"]
    if up["clips"]:
        print(f"strip of marks burned in before compression (x264 crf {UPLOAD_CRF}), "
              f"{up['clips']} marks found again ({up['lost']} lost; {up['refused']} strips "
              f"refused): PSNR in the mark against the clean clip through the same "
              f"encoder: none {up['psnr_mark_none']:.2f}, datakit "
              f"{up['psnr_mark_datakit']:.2f}, delogo found box {up['psnr_mark_delogo']:.2f} "
              f"({up['psnr_mark_datakit'] - up['psnr_mark_delogo']:+.2f} dB)")
    cs = summary["clean_strip"]
    print(f"clean clips through the strip step: changed {len(cs['changed'])} "
          f"{cs['changed']}, lowest PSNR against the input {cs['lowest_psnr']:.2f} dB "
          "(99 = unchanged)")
    shards = summary["shard_round_trip"]
    if shards:
        print(f"`datakit watermark` (strip) on a shard of the clean clips: mp4 bytes changed "
              f"for {len(shards['changed'])} {shards['changed']}; actions "
              f"{sorted(set(shards['actions'].values()))} ({shards['seconds']:.0f} s)")
    for row in summary.get("real_marked", []):
        for part in ("photo", "still_clip"):
            f = row[part]["fields"]
            print(f"  {row['name']} (a publisher's real mark at {row['true_box']}) as a "
                  f"{part.replace('_', ' ')}: {'found' if row[part]['located'] else 'missed'}"
                  f", score {f['watermark_score']} box {f['watermark_box']}: "
                  f"{f['watermark_reason']}")
    c = summary["cost"]
    print(f"cost per real clip: detect {c['detect_s'] * 1000:.0f} ms against encode "
          f"{c['encode_s'] * 1000:.0f} ms ({c['detect_s'] / c['encode_s']:.2f}x); marked clips "
          f"detect {c['detect_marked_s'] * 1000:.0f} ms")
