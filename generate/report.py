"""The checks as something to look at: contact sheets, metric plots and one HTML page.

`REPORT/index.html` has a table of every video's headline metrics (videos that fail a
threshold of `thresholds.THRESHOLDS` first, most failures first, then by seam jump; failing
cells in red, each column's threshold on hover), then per video its contact sheet (a row per
chunk, so a seam is the step from one row to the next) and its plots, one panel per metric,
seams drawn as vertical lines. Plots are PNGs drawn with matplotlib's Agg backend; the page
links them by relative path, so the folder can be copied or served as it is.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datakit.io.atomic import atomic_file, atomic_write
from generate.thresholds import THRESHOLDS

INDEX = "index.html"
SUMMARY = "summary.json"

# Headline metrics: (key, label, help text, True when higher is worse)
COLUMNS = (
    ("seam_jump_max", "seam jump (max)", "difference across a seam / median inside chunks; "
     "about 1 = invisible", True),
    ("seam_reversals", "seam reversals", "seams where the motion turns back (a rewind)", True),
    ("seam_warp_jump_max", "seam warp jump", "warp error of the pair across a seam / median "
     "inside chunks: holds under motion; about 1 = invisible", True),
    ("seam_motion_jump_max", "seam motion jump", "flow acceleration of the pair across a seam "
     "/ median inside chunks: the camera or an object jumps; about 1 = steady", True),
    ("warp_error", "warp error", "squared RGB error after flow warping, occlusions excluded",
     True),
    ("mawe", "MAWE", "warp error / (9.5 x mean squared flow), OpenCV flow", True),
    ("flicker", "flicker", "VBench temporal flickering score; 1 = steady", False),
    ("flow_std", "flow std", "std over frames of the mean flow magnitude (px)", True),
    ("motion", "motion (px/frame)", "mean optical-flow magnitude", False),
    ("stagnant_fraction", "stagnant", "share of frame pairs that barely move", True),
    ("scene_cuts_off_seams", "cuts off seams", "shot cuts inside chunks", True),
    ("colour_drift_max", "colour drift (dE)", "largest CIELAB drift of a chunk against the "
     "first, followed along the optical flow: the same scene points changing colour", True),
    ("colour_change_max", "colour change (dE)", "largest CIELAB distance of a chunk's mean "
     "colour to the first chunk's: drift plus content that changes", False),
    ("repetition", "repetition", "largest d(c, c+1) - d(c, c+2) of the chunks' mean "
     "thumbnails (grey levels): an A/B/A/B look is positive", True),
    ("sharpness_drift_max", "sharpness drift", "largest |log2| ratio of a chunk's sharpness "
     "to the first chunk's", True),
)


def write_contact_sheet(rows: Sequence[Sequence[np.ndarray]], result: dict[str, Any],
                        path: str | os.PathLike) -> None:
    """Save thumbnails as a PNG grid, one row per chunk, labelled with its frame range."""
    import cv2

    rows = [list(row) for row in rows if len(row)]
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    label, gap = 18, 2
    sheet = np.full((len(rows) * (height + label + gap), columns * (width + gap), 3), 255,
                    np.uint8)
    chunks = result.get("chunks", [])
    for r, row in enumerate(rows):
        top = r * (height + label + gap)
        if r < len(chunks):
            start, frames = chunks[r]["start"], chunks[r]["frames"]
            text = f"chunk {r}: frames {start}-{start + frames - 1}"
        else:
            text = f"row {r}"
        cv2.putText(sheet, text, (3, top + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        for c, thumb in enumerate(row):
            left = c * (width + gap)
            sheet[top + label:top + label + height, left:left + width] = thumb
    ok, data = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: could not encode the contact sheet")
    atomic_write(path, data.tobytes())


def write_metric_plots(result: dict[str, Any], path: str | os.PathLike) -> None:
    """One panel per metric over time, seams as dashed lines; drift panels per chunk."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result["series"]
    pairs = np.arange(1, len(series["difference"]) + 1)  # pair i ends at frame i
    starts = [c["start"] for c in result["chunks"]]
    panels = [
        ("frame difference (grey levels)", pairs, series["difference"]),
        ("optical-flow magnitude (px)", pairs, series["flow"]),
        ("warp error", pairs, [np.nan if v is None else v for v in series["warp_error"]]),
        ("occluded share", pairs, series["occluded"]),
        ("flow acceleration (px)", pairs,
         [np.nan if v is None else v for v in series["acceleration"]]),
        ("colour drift vs first chunk, along the flow (dE)", starts,
         [c["colour_drift"] for c in result["chunks"]]),
        ("sharpness drift vs first chunk (log2)", starts,
         [c["sharpness_log2_ratio"] for c in result["chunks"]]),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 1.7 * len(panels)), sharex=True)
    for axis, (title, x, y) in zip(axes, panels, strict=True):
        marker = "o-" if x is starts else "-"
        axis.plot(x, y, marker, linewidth=1, markersize=4)
        axis.set_title(title, fontsize=9, loc="left")
        axis.tick_params(labelsize=7)
        for seam in result["seams"]:
            axis.axvline(seam["frame"], color="tab:red", linestyle="--", linewidth=0.8)
    axes[-1].set_xlabel("frame", fontsize=8)
    figure.tight_layout()
    with atomic_file(path) as handle:
        figure.savefig(handle, format="png", dpi=90)
    plt.close(figure)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def write_report(results: Sequence[dict[str, Any]], folder: str | os.PathLike) -> Path:
    """Write `index.html` (and the plots, and `summary.json`) for `results` into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    checked = [r for r in results if "error" not in r]
    failed = [r for r in results if "error" in r]
    checked.sort(key=lambda r: (-len(r.get("fails", [])),
                                -(r["metrics"].get("seam_jump_max") or 0)))
    for result in checked:
        write_metric_plots(result, folder / f"{result['name']}_metrics.png")

    def limit(key: str) -> str:
        if key not in THRESHOLDS:
            return ""
        value, above = THRESHOLDS[key]
        return f" (fails {'above' if above else 'below'} {value})"

    head = "".join(f'<th title="{html.escape(help_ + limit(key))}">{html.escape(label)}</th>'
                   for key, label, help_, _ in COLUMNS)

    def cells(r: dict[str, Any]) -> str:
        fails = r.get("fails", [])
        return "".join(f'<td{" class=bad" if key in fails else ""}>'
                       f"{_cell(r['metrics'].get(key))}</td>" for key, *_ in COLUMNS)

    rows = "".join(
        f'<tr><td><a href="#{html.escape(r["name"])}">{html.escape(r["name"])}</a></td>'
        f'<td>{r["frames"]}</td><td>{len(r["seams"])}</td>'
        f'<td{" class=bad" if r.get("fails") else ""}>{len(r.get("fails", []))}</td>'
        + cells(r) + "</tr>" for r in checked)
    sections = []
    for r in checked:
        seams = ", ".join(f"{s['frame']} (x{s['jump']:.2f}, warp x{_cell(s.get('warp_jump'))}, "
                          f"motion x{_cell(s.get('motion_jump'))})" for s in r["seams"]) or "none"
        cuts = ", ".join(map(str, r["scene_cut_frames"])) or "none"
        sections.append(
            f'<section id="{html.escape(r["name"])}"><h2>{html.escape(r["name"])}</h2>'
            f'<p>{html.escape(r["video"])}: {r["frames"]} frames, {r["width"]}x{r["height"]} '
            f'at {_cell(r["fps"])} fps; chunks from {html.escape(r["chunks_from"])}; '
            f'analysed at {r["analysis_size"][0]}x{r["analysis_size"][1]} with '
            f'{html.escape(r["flow"])} flow.</p>'
            f"<p>seams (frame: difference, warp and motion jumps): {seams}<br>"
            f"scene cuts at: {cuts}</p>"
            f'<img src="{html.escape(r["contact_sheet"])}" alt="contact sheet">'
            f'<img src="{html.escape(r["name"])}_metrics.png" alt="metric plots"></section>')
    errors = "".join(f"<li>{html.escape(r['video'])}: {html.escape(r['error'])}</li>"
                     for r in failed)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>datakit check</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:right}}
th{{background:#f3f3f3}}td:first-child{{text-align:left}}img{{display:block;margin:.5em 0;
max-width:100%}}.bad{{color:#b00}}</style></head><body>
<h1>datakit check: {len(checked)} videos</h1>
<p>Hover a column for its definition; generate/checks.py documents each metric.</p>
<table><tr><th>video</th><th>frames</th><th>seams</th><th title="figures past their
threshold">fails</th>{head}</tr>{rows}</table>
{f'<h2 class="bad">could not be checked</h2><ul class="bad">{errors}</ul>' if failed else ""}
{"".join(sections)}
</body></html>
"""
    atomic_write(folder / INDEX, page)
    summary = [{"name": r["name"], "video": r["video"],
                **({"error": r["error"]} if "error" in r
                   else {**r["metrics"], "fails": r.get("fails", [])})} for r in results]
    atomic_write(folder / SUMMARY, json.dumps(summary, indent=1) + "\n")
    return folder / INDEX
