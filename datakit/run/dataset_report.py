"""`datakit report`: one static HTML page to look at a dataset before training on it.

Input: any folder datakit wrote (`shards/*.tar`, `manifest.parquet`, `stats.json`, see
docs/output-format.md), or any folder of WebDataset shards with mp4 members and no manifest
(then the shards are scanned for the statistics). Output, by default `SRC/report/`:

```
index.html      summary, contact sheet, plots, duplicate captions, failures table
report.json     the same numbers as JSON, the chosen keys and what could not be read
media/          KEY.mp4 of each chosen clip (the shard's bytes when browsers play them,
                H.264 yuv420p re-encoded otherwise), KEY.jpg (three frames), plots/*.png
```

The page works from `file://` with no network: images and videos are files beside it, and
the only script is inline (sorting the failures table, opening a clip's video). Statistics
come from the manifest alone; only the `samples` chosen clips are read from their shards,
so a report of a million rows costs one parquet read and a few dozen clip extractions.

Nothing unreadable stops the report: a damaged shard or clip, an unreadable stats.json, a
manifest from a newer version with unknown columns are listed on the page under "Could not
be read". A folder that is neither a datakit output nor holds shards is a `UserError`.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from datakit.io.atomic import atomic_write
from datakit.io.errors import UserError

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
INDEX = "index.html"
REPORT_JSON = "report.json"
MEDIA = "media"
STRIP_HEIGHT = 96  # pixels of each of the three frames on the contact sheet


@dataclass
class Dataset:
    """What was found at a report's source folder.

    Args:
        root: the folder.
        manifest: one row per sample or failed input (`manifests.report.normalize_manifest`).
        shards: shard name (as the manifest's `shard` column holds it) -> tar path.
        run: the parsed stats.json, or None.
        from_manifest: False when the statistics were read from the shards.
        notes: what could not be read, one line each.
    """

    root: Path
    manifest: pd.DataFrame
    shards: dict[str, Path]
    run: dict[str, Any] | None
    from_manifest: bool
    notes: list[str] = field(default_factory=list)


def open_dataset(src: str | os.PathLike) -> Dataset:
    """Find the manifest, shards and stats.json of `src`; scan the shards when there is no
    readable manifest.

    Raises:
        UserError: `src` is not a folder, or holds neither a manifest nor `.tar` shards.
    """
    from datakit.run.shards import SHARDS_DIR
    from manifests.report import load_manifest, manifest_from_shards
    from manifests.store import MANIFEST_NAME, STATS_NAME

    root = Path(src)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    shard_dir = root / SHARDS_DIR if (root / SHARDS_DIR).is_dir() else root
    shards = {path.stem: path for path in sorted(shard_dir.glob("*.tar"))}
    notes: list[str] = []
    manifest = None
    if (root / MANIFEST_NAME).is_file():
        try:
            manifest, notes = load_manifest(root / MANIFEST_NAME)
        except ValueError as error:
            notes.append(f"{error}; statistics read from the shards instead")
    if manifest is None and not shards:
        raise UserError(f"{root}: not a datakit output (no readable manifest.parquet) and no "
                        ".tar shards in it or in its shards/ folder")
    from_manifest = manifest is not None
    if manifest is None:
        manifest, scan_notes = manifest_from_shards(list(shards.values()))
        notes.extend(scan_notes)
    run = None
    if (root / STATS_NAME).is_file():
        try:
            run = json.loads((root / STATS_NAME).read_text())
            if not isinstance(run, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as error:
            notes.append(f"{root / STATS_NAME}: unreadable ({error}); no run figures")
            run = None
    return Dataset(root, manifest, shards, run, from_manifest, notes)


def _file_name(index: int, key: str) -> str:
    """A file name for the index-th chosen clip: its key made safe (keys may hold slashes)."""
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9_-]+', '_', key)[:80]}"


def plays_in_browsers(mp4: bytes) -> bool:
    """True for an MP4/MOV container whose first video stream is H.264 in yuv420p."""
    import io

    import av

    try:
        with av.open(io.BytesIO(mp4)) as container:
            stream = container.streams.video[0]
            return ("mp4" in container.format.name and stream.codec_context.name == "h264"
                    and stream.codec_context.pix_fmt == "yuv420p")
    except Exception:  # unreadable means it will not play either
        return False


def _reencode(mp4: bytes, path: Path) -> None:
    """Decode any video and write it as H.264 yuv420p, frame by frame (even size: cropped)."""
    from datakit.io.video import VideoWriter, even_size, iter_frames, probe

    info = probe(mp4)
    width, height = even_size(info.width, info.height)
    with VideoWriter(path, width, height, info.fps or 8.0, crf=20, preset="veryfast") as writer:
        for frame in iter_frames(mp4):
            writer.write(frame[:height, :width])


def _write_strip(video: Path, path: Path) -> None:
    """First, middle and last frame side by side, each STRIP_HEIGHT pixels high, as a JPEG."""
    import cv2
    import numpy as np

    from datakit.io.video import probe, read_frames

    count = probe(video).frames
    frames = read_frames(video, sorted({0, count // 2, max(0, count - 1)}))
    height, width = frames.shape[1:3]
    size = (max(1, round(width * STRIP_HEIGHT / height)), STRIP_HEIGHT)
    thumbs = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    gap = np.full((STRIP_HEIGHT, 3, 3), 255, np.uint8)
    strip = np.concatenate([part for t in thumbs for part in (t, gap)][:-1], axis=1)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise OSError(f"{path}: could not encode the contact sheet strip")
    path.write_bytes(data.tobytes())


def extract_samples(dataset: Dataset, chosen: pd.DataFrame, media: Path,
                    progress: bool = False) -> list[dict[str, Any]]:
    """Copy each chosen clip out of its shard into `media` with its three-frame strip.

    Only the shards holding chosen clips are opened, and of those only the chosen members
    are read. Returns one dict per chosen row (`key`, `label`, `caption`, `video`, `strip`,
    `reencoded`), with `error` instead of the files when the clip could not be read.
    """
    from rich.console import Console
    from rich.progress import Progress

    from manifests.report import find_video_members

    media.mkdir(parents=True, exist_ok=True)
    clips = [{"key": str(row.key), "name": _file_name(i, row.key),
              **{name: None if pd.isna(value) else str(value) for name, value in
                 (("label", row.label), ("caption", row.caption), ("shard", row.shard))},
              "flags": [] if row.caption_flags is None or isinstance(row.caption_flags, float)
              else [str(flag) for flag in row.caption_flags]}
             for i, row in enumerate(chosen.itertuples())]
    by_shard: dict[str | None, list[dict[str, Any]]] = {}
    for clip in clips:
        by_shard.setdefault(clip["shard"], []).append(clip)
    with Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task("report: reading clips", total=len(clips))
        for shard, wanted in by_shard.items():
            path = dataset.shards.get(shard)
            if path is None:
                for clip in wanted:
                    clip["error"] = f"shard {shard!r} named by the manifest is not in the folder"
                bar.advance(task, len(wanted))
                continue
            try:
                with tarfile.open(path, "r:") as tar:
                    members = find_video_members(tar, {clip["key"] for clip in wanted})
                    for clip in wanted:
                        _extract_clip(tar, members.get(clip["key"]), clip, media)
                        bar.advance(task)
            except (OSError, tarfile.TarError) as error:
                for clip in wanted:
                    clip.setdefault("error", f"{path}: unreadable shard ({error})")
    return clips


def _extract_clip(tar: tarfile.TarFile, member: tarfile.TarInfo | None, clip: dict[str, Any],
                  media: Path) -> None:
    if member is None:
        clip["error"] = f"shard {clip['shard']}: no video of {clip['key']} in it"
        return
    video = media / f"{clip['name']}.mp4"
    strip = media / f"{clip['name']}.jpg"
    try:
        mp4 = tar.extractfile(member).read()
        clip["reencoded"] = not plays_in_browsers(mp4)
        if clip["reencoded"]:
            _reencode(mp4, video)
        else:
            video.write_bytes(mp4)
        _write_strip(video, strip)
    except Exception as error:  # a damaged clip is listed on the page, the others go on
        video.unlink(missing_ok=True)
        clip["error"] = f"{clip['key']}: unreadable clip ({error})"
        return
    clip["video"] = f"{MEDIA}/{video.name}"
    clip["strip"] = f"{MEDIA}/{strip.name}"


def write_plots(frame: pd.DataFrame, folder: Path) -> list[tuple[str, str]]:
    """Draw the distribution plots that the manifest has data for, as PNGs in `folder`.

    Returns (title, file name) per plot written, in page order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from manifests.report import caption_words, counts, durations
    from manifests.schema import Status

    folder.mkdir(parents=True, exist_ok=True)
    ok = frame[frame["status"] == Status.OK.value]
    tally = counts(frame)
    panels = [
        ("caption length (words)", "caption_words", caption_words(frame), "hist"),
        ("clip duration (s)", "duration", durations(frame), "hist"),
        ("resolution (top 12)", "resolution", tally["resolution"].head(12), "bar"),
        ("frames per second", "fps", tally["fps"].sort_index(), "bar"),
        ("label frequency by rank (log-log)", "labels", tally["label"], "rank"),
        ("camera motion (pan-zoom)", "motion", tally["motion"], "bar"),
        ("watermark score", "watermark_score", ok["watermark_score"].dropna(), "hist"),
        ("CLIP score", "clip_score", ok["clip_score"].dropna(), "hist"),
        ("caption label agreement", "label_agreement", ok["label_agreement"].dropna(), "hist"),
    ]
    written = []
    for title, name, values, kind in panels:
        if values.empty:
            continue
        figure, axis = plt.subplots(figsize=(4.6, 2.6))
        if kind == "hist":
            numbers = values.to_numpy(dtype=float)
            span = numbers.max() - numbers.min()
            whole = bool(np.all(numbers == np.round(numbers))) and span <= 60
            bins = np.arange(numbers.min(), numbers.max() + 2) - 0.5 if whole else 40
            axis.hist(numbers, bins=bins, color="#4c72b0")
            axis.set_ylabel("clips", fontsize=8)
        elif kind == "bar":
            names = [f"{v:g}" if isinstance(v, float) else str(v) for v in values.index]
            axis.barh(names[::-1], values.to_numpy()[::-1], color="#4c72b0")
            axis.set_xlabel("clips", fontsize=8)
        else:
            axis.loglog(range(1, len(values) + 1), values.to_numpy(), ".-", color="#4c72b0")
            axis.set_xlabel("label rank", fontsize=8)
            axis.set_ylabel("clips", fontsize=8)
        axis.set_title(title, fontsize=9, loc="left")
        axis.tick_params(labelsize=7)
        figure.tight_layout()
        figure.savefig(folder / f"{name}.png", format="png", dpi=90)
        plt.close(figure)
        written.append((title, f"{name}.png"))
    return written


def write_dataset_report(src: str | os.PathLike, out: str | os.PathLike | None = None,
                         samples: int = 64, seed: int = 0, progress: bool = False) -> Path:
    """Write the HTML report of the dataset in `src`; return the path of its index.html.

    Args:
        src: a datakit output folder, or a folder of WebDataset shards (see `open_dataset`).
        out: the report folder (default `src/report`); an earlier report there is replaced.
        samples: clips on the contact sheet, chosen by `manifests.report.choose_samples`.
        seed: changes which clips are chosen.
        progress: show a progress bar while clips are read.

    Raises:
        UserError: `src` holds no dataset, `out` cannot be written, or `samples`/`seed` < 0.
    """
    from manifests.report import choose_samples, dataset_statistics

    # 1. Check inputs and find the dataset.
    if samples < 0:
        raise UserError(f"--samples must be at least 0, got {samples}")
    if seed < 0:
        raise UserError(f"--seed must be at least 0, got {seed}")
    dataset = open_dataset(src)
    out = Path(out) if out is not None else dataset.root / REPORT_DIR
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{out}: cannot write the report ({error.strerror or error})") from None
    media = out / MEDIA
    if (out / REPORT_JSON).is_file():  # an earlier report: its media would go stale
        shutil.rmtree(media, ignore_errors=True)
    # 2. Statistics from the manifest.
    stats = dataset_statistics(dataset.manifest)
    # 3. The chosen clips, read from their shards.
    chosen = choose_samples(dataset.manifest, samples, seed)
    clips = extract_samples(dataset, chosen, media, progress=progress)
    notes = dataset.notes + [clip["error"] for clip in clips if "error" in clip]
    # 4. Plots and the page.
    plots = write_plots(dataset.manifest, media / "plots")
    page = render_page(dataset, stats, clips, plots, notes, samples=samples, seed=seed)
    atomic_write(out / INDEX, page)
    summary = {"source": str(dataset.root), "from_manifest": dataset.from_manifest,
               "samples": samples, "seed": seed, "statistics": stats,
               "run": (dataset.run or {}).get("run"),
               "chosen": [clip["key"] for clip in clips], "could_not_read": notes}
    atomic_write(out / REPORT_JSON, json.dumps(summary, indent=1, default=str) + "\n")
    return out / INDEX


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:.3g} TB"


def _number(value: Any) -> str:
    """A count or rate from stats.json, readable ('?' when absent or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def _hms(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _table(head: list[str], rows: list[list[Any]], css: str = "") -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _summary_section(dataset: Dataset, stats: dict[str, Any]) -> str:
    status = stats["status"]
    counts = "".join(f'<tr data-status="{_e(s)}"><td>{_e(s)}</td><td>{n:,}</td></tr>'
                     for s, n in status.items())
    source = ("manifest.parquet" if dataset.from_manifest
              else f"no manifest: scanned {len(dataset.shards)} shards")
    config = (dataset.run or {}).get("config")
    config = config if isinstance(config, dict) else {}
    facts = [
        ("source", f"{dataset.root} ({source})"),
        ("pipeline", config.get("pipeline", "unknown")),
        ("rows / inputs", f"{stats['rows']:,} / {stats['inputs']:,}"),
        ("shards", f"{len(dataset.shards):,} ("
                   f"{_size(sum(p.stat().st_size for p in dataset.shards.values()))} on disk)"),
        ("ok clips: duration", f"{_hms(stats['ok_seconds'])} ({stats['ok_seconds']:,.1f} s)"),
        ("ok clips: size", _size(stats["ok_bytes"])),
    ]
    run = (dataset.run or {}).get("run")
    if isinstance(run, dict):
        facts.append(("last run", f"{_number(run.get('processed'))} inputs in "
                      f"{_number(run.get('seconds'))} s = {_number(run.get('per_second'))}/s, "
                      f"finished {run.get('finished_at', '?')}"))
    else:
        facts.append(("last run", "no readable stats.json: throughput unknown"))
    fact_rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    warning = ""
    if status.get("ok", 0) == 0:
        warning = ('<p class="bad" id="no-ok"><b>No ok samples</b>: this dataset holds nothing '
                   "to train on. The failure reasons below say why.</p>")
    reasons = _table(["count", "status", "reason", "example source", "example error"],
                     [[f"{r['count']:,}", r["status"], r["reason"], r["example_source"],
                       r["example_error"]] for r in stats["failure_reasons"]], "reasons")
    more = stats["failure_kinds"] - len(stats["failure_reasons"])
    return (f'<section id="summary"><h2>Summary</h2>{warning}<div class="row">'
            f'<table class="facts">{fact_rows}</table>'
            f'<table class="counts"><thead><tr><th>status</th><th>rows</th></tr></thead>'
            f"<tbody>{counts}</tbody></table></div>"
            f"<h3>Top failure reasons</h3>"
            + (reasons + (f"<p>{more:,} more reasons in the failures table.</p>" if more > 0
                          else "") if stats["failure_reasons"] else "<p>none</p>")
            + "</section>")


def _contact_sheet(clips: list[dict[str, Any]], samples: int, seed: int) -> str:
    cards = []
    for clip in clips:
        if "error" in clip:
            continue
        label = f'<span class="label">{_e(clip["label"])}</span> ' if clip["label"] else ""
        flags = "".join(f' <span class="flag">{_e(f)}</span>' for f in clip.get("flags", ()))
        cards.append(
            f'<figure class="clip"><img src="{_e(clip["strip"])}" alt="first, middle and last '
            f'frame of {_e(clip["key"])}" title="click to play">'
            f'<video controls muted loop preload="none" hidden src="{_e(clip["video"])}">'
            f"</video><figcaption>{label}{_e(clip['caption'])}{flags}"
            f'<br><code>{_e(clip["key"])}</code></figcaption></figure>')
    if not cards:
        body = "<p>No clips to show: the dataset has no ok samples.</p>" if not clips else \
            "<p>None of the chosen clips could be read (see below).</p>"
    else:
        body = f'<div class="sheet">{"".join(cards)}</div>'
    return (f'<section id="samples"><h2>Samples</h2><p>{len(cards)} clips (asked for '
            f"{samples}, seed {seed}, stratified by label); first, middle and last frame; click "
            f"one to play it.</p>{body}</section>")


def _plots_section(stats: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    images = "".join(f'<img src="{MEDIA}/plots/{_e(name)}" alt="{_e(title)}">'
                     for title, name in plots)
    parts = [f'<div class="plots">{images}</div>' if plots else "<p>No ok samples to plot.</p>"]
    labels = stats["labels"]
    if labels["distinct"]:
        parts.append(
            f"<h3>Labels</h3><p>{labels['distinct']:,} labels over {labels['labelled']:,} "
            "clips.</p><div class=\"row\">"
            + _table(["most frequent", "clips"], [[k, f"{v:,}"] for k, v in
                                                  labels["most"].items()])
            + _table(["least frequent", "clips"], [[k, f"{v:,}"] for k, v in
                                                   labels["least"].items()]) + "</div>")
    described = [(name, stats[key]) for name, key in
                 (("caption words", "caption_words"), ("duration (s)", "duration"),
                  ("watermark score", "watermark_score"), ("CLIP score", "clip_score"),
                  ("caption label agreement", "label_agreement"))
                 if stats[key]]
    if described:
        parts.append(_table(["", "clips", "mean", "min", "median", "max"],
                            [[n, f"{d['count']:,}", f"{d['mean']:.3g}", f"{d['min']:.3g}",
                              f"{d['median']:.3g}", f"{d['max']:.3g}"] for n, d in described]))
    if stats["watermark_action"]:
        parts.append(_table(["watermark action", "rows"],
                            [[k, f"{v:,}"] for k, v in stats["watermark_action"].items()]))
    if stats["caption_flags"]:
        parts.append(
            '<h3>Flagged captions</h3><p id="caption-flags">Caption checks (docs/caption.md): '
            "filter them with the manifest's <code>caption_flags</code> and "
            "<code>label_agreement</code> columns.</p>"
            + _table(["flag", "clips", "example keys"],
                     [[flag, f"{found['count']:,}", " ".join(found["keys"])]
                      for flag, found in stats["caption_flags"].items()]))
    duplicates = stats["duplicate_captions"]
    parts.append(
        f'<h3>Near-duplicate captions</h3><p id="duplicates">{duplicates["duplicated"]:,} of '
        f'{duplicates["captions"]:,} captions are in {duplicates["groups"]:,} groups that are '
        "equal after lower-casing and dropping digits and punctuation.</p>")
    if duplicates["worst"]:
        parts.append(_table(["clips", "caption", "example keys"],
                            [[g["count"], g["caption"], " ".join(g["keys"])]
                             for g in duplicates["worst"]]))
    return f'<section id="plots"><h2>Distributions</h2>{"".join(parts)}</section>'


def _failures_section(frame: pd.DataFrame) -> str:
    from manifests.report import NOT_FAILURES

    failures = frame[~frame["status"].isin(NOT_FAILURES)]
    rows = "".join(f"<tr><td>{_e(r.source)}</td><td>{_e(r.status)}</td><td>{_e(r.error)}</td>"
                   f"<td>{_e(r.key)}</td></tr>" for r in failures.itertuples())
    table = (f'<table class="sortable" id="failures"><thead><tr><th>source</th><th>status</th>'
             f"<th>reason</th><th>key</th></tr></thead><tbody>{rows}</tbody></table>")
    return (f'<section id="failures-section"><h2>Failures ({len(failures):,})</h2>'
            + ("<p>Click a column to sort.</p>" + table if len(failures) else "<p>none</p>")
            + "</section>")


SCRIPT = """
for (const th of document.querySelectorAll('table.sortable th')) {
  th.addEventListener('click', () => {
    const body = th.closest('table').tBodies[0], column = th.cellIndex;
    const up = th.dataset.order !== 'up';
    th.dataset.order = up ? 'up' : 'down';
    const rows = Array.from(body.rows).sort((a, b) => a.cells[column].textContent
      .localeCompare(b.cells[column].textContent, undefined, {numeric: true}));
    body.append(...(up ? rows : rows.reverse()));
  });
}
for (const img of document.querySelectorAll('figure.clip img')) {
  img.addEventListener('click', () => {
    const video = img.nextElementSibling;
    video.hidden = false;
    img.hidden = true;
    video.play();
  });
}
"""

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.4em 1.5em .8em 0}
td,th{border:1px solid #ddd;padding:2px 7px;font-size:13px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.row{display:flex;flex-wrap:wrap;align-items:flex-start}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:10px;align-items:start}
figure.clip{margin:0;border:1px solid #ddd;padding:5px;font-size:12px}
figure.clip img,figure.clip video{width:100%;cursor:pointer;display:block}
figure.clip video[hidden],figure.clip img[hidden]{display:none}
.label{background:#e8eefc;border-radius:3px;padding:0 4px}
.flag{background:#fde8e8;border-radius:3px;padding:0 4px;font-size:smaller}
.plots img{margin:4px;border:1px solid #eee}.bad{color:#a00}
table.sortable th{cursor:pointer}
"""


def render_page(dataset: Dataset, stats: dict[str, Any], clips: list[dict[str, Any]],
                plots: list[tuple[str, str]], notes: list[str], samples: int,
                seed: int) -> str:
    """The whole index.html as one string (styles and script inline, media linked)."""
    unreadable = ""
    if notes:
        unreadable = ('<section id="unreadable"><h2 class="bad">Could not be read</h2><ul>'
                      + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></section>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>datakit report: {_e(dataset.root.name)}</title><style>{STYLE}</style></head>"
        f"<body><h1>datakit report: {_e(dataset.root)}</h1>"
        + unreadable + _summary_section(dataset, stats) + _contact_sheet(clips, samples, seed)
        + _plots_section(stats, plots) + _failures_section(dataset.manifest)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
