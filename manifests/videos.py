"""Turn a video collection (classification sets, shards of clips) into records.

A record names one input video, or one clip inside a video file: a stable key, its source
(the path relative to SRC, or `TAR::MEMBER`), the file path or the bytes read from a shard,
the class label as the dataset spells it, and optional `start`/`end` seconds. Labels are kept
raw here (`playing_guitar`, `makingApplePie`); the caption stage turns them into words.

`read_video_records(src, annotations)` understands:

- a class-folder tree `SRC/[split/]LABEL/CLIP.ext` (Kinetics as downloaded, UCF, Moments in
  Time's `training/LABEL/FILE.mp4`): the label is the clip's parent folder, the folder above
  it is kept as `split`; a video directly in SRC has no label. Extensions: .mp4 .webm .mkv
  .avi .mov .m4v, any case; hidden names skipped; symlinked folders not followed.
- a single video file.
- WebDataset shards (a `.tar` or a folder of them) whose samples hold a video member
  (re-captioning): the label comes from the sample's json (`label`), the old caption is
  kept as `text`; keys are the member keys (already unique in a dataset), so a re-captioned
  set keeps its keys.
- `--annotations` files, one or more, each recognised by its content:
  - Kinetics CSV (`label,youtube_id,time_start,time_end[,split]`): the clip file is
    `{youtube_id}_{start:06d}_{end:06d}.ext` anywhere under SRC; when only the whole source
    video `{youtube_id}.ext` is there, the record covers `[time_start, time_end]` of it.
  - a CSV with a path column (`path`, `video`, `file`, `filename`, `video_path`) and a label
    column (`label`, `class`, `category`), or Moments-in-Time's header-less
    `LABEL/FILE.mp4,LABEL,...` rows: paths are resolved against SRC, then by file name.
  - VideoLT: a video list (`VIDEO_ID LABEL_ID[,LABEL_ID...]` per line, `train.lst`, or
    `CLASS/VIDEO_ID FRAMES LABEL_IDS,` per line, `labels/*_videofolder.txt`) and its label
    list (`NAME ID [COUNT]` per line, e.g. `count-labels-train.lst`); a label list beside
    the video list is found by itself. Several labels become `"a, b"` (all kept in `meta`).
  - mmaction2: a video list (`PATH.mp4 LABEL_ID [LABEL_ID...]` per line, paths relative to
    SRC) and its class-index file (one class name per line, line 0 is class 0, e.g.
    `label_map_k400.txt`), passed too or found beside the list.
  With annotations, the inputs are the annotation rows: a row whose file is missing, or
  whose label is empty, is still a record (failed, or without a label), never dropped.

Keys: from the path relative to SRC as for images (`abseiling/x_000417_000427.mp4` ->
`abseiling__x_000417_000427`); Kinetics rows get `{label}__{youtube_id}_{start}_{end}`;
collisions are told apart deterministically (`manifests.sources.unique_keys`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from datakit.io.errors import UserError
from manifests.sources import (
    SHARD_EXTENSION,
    Record,
    ShardSample,
    bounded_text,
    check_tar,
    claim_key,
    label_error,
    path_key,
    sanitize,
    scan_folder,
    shard_records,
    unique_keys,
)

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts",
                    ".mts", ".m2ts", ".vob", ".wmv", ".flv", ".3gp", ".ogv")
"""MPEG program and transport streams (.mpg, .vob, .ts, camcorders' .mts) carry no index:
they are decoded in order (`datakit.io.video.RANDOM_ACCESS_DEMUXERS`)."""
_PATH_COLUMNS = ("path", "video", "file", "filename", "video_path", "clip", "video_id")
_LABEL_COLUMNS = ("label", "class", "category", "class_name", "label_name")
_KINETICS_COLUMNS = {"youtube_id", "time_start", "time_end"}


@dataclass(frozen=True)
class VideoInput:
    """What SRC is, found once (for records and for the progress bar's count)."""

    kind: str  # "folder", "file", "shards" or "annotations"
    root: Path
    files: list[Path] = field(default_factory=list)
    unlistable: frozenset[Path] = frozenset()
    rows: list[dict[str, Any]] = field(default_factory=list)  # annotation rows, resolved


def read_video_records(
    src: str | os.PathLike, annotations: Sequence[str | os.PathLike] = ()
) -> Iterator[Record]:
    """Records of SRC in a deterministic order (sorted paths, annotation order, tar order).

    Args:
        src: a video folder (class tree), a video file, or a `.tar` shard or folder of them.
        annotations: Kinetics / path+label CSV, Moments-in-Time CSV, or VideoLT list files.

    Raises:
        UserError: SRC is missing or holds no videos; an annotation file is unreadable or of
            no known kind.
    """
    found = detect_videos(src, annotations)
    if found.kind == "shards":
        if found.root.is_file():
            check_tar(found.root)
        records = shard_records(found.root, found.files, _video_group_record)
    elif found.kind == "annotations":
        records = _annotation_records(found)
    else:
        records = _folder_records(found)
    return _refuse_long_labels(records)


def _refuse_long_labels(records: Iterator[Record]) -> Iterator[Record]:
    """A record whose label is longer than `MAX_LABEL_CHARS` fails with the reason (its
    label is dropped, so the row does not carry it either)."""
    for record in records:
        error = label_error(record.label)
        if error is not None and record.error is None:
            record = dataclasses.replace(record, label=None, error=error)
        yield record


def count_video_records(found: VideoInput) -> int | None:
    """How many records `read_video_records` gives for a detected input (None for shards)."""
    if found.kind == "shards":
        return None
    if found.kind == "annotations":
        return len(found.rows)
    return len(found.files)


def detect_videos(
    src: str | os.PathLike, annotations: Sequence[str | os.PathLike] = ()
) -> VideoInput:
    """What SRC (with its annotations) is, or a UserError saying why it is no input."""
    root = Path(src).absolute()  # records carry paths a worker in another folder can open
    if not root.exists():
        raise UserError(f"{src}: no such file or folder")
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == SHARD_EXTENSION:
            return VideoInput("shards", root, [root])
        if suffix in VIDEO_EXTENSIONS:
            if annotations:
                raise UserError(f"{src}: --annotations needs a folder of videos as SRC")
            return VideoInput("file", root.parent, [root])
        raise UserError(
            f"{src}: not a video folder, a video file or a .tar shard (got a "
            f"{suffix or 'file'} file)"
        )
    videos, tars, unlistable = scan_folder(root, VIDEO_EXTENSIONS)
    if annotations:
        if not videos:
            raise UserError(f"{src}: no videos found for the annotations (looked for "
                            f"{' '.join(VIDEO_EXTENSIONS)})")
        return VideoInput("annotations", root, videos, unlistable,
                          _resolve_rows(root, videos, annotations))
    if videos and tars:
        raise UserError(
            f"{src}: holds both videos ({len(videos)}) and .tar shards ({len(tars)}); "
            "point SRC at a folder of one kind"
        )
    if videos:
        return VideoInput("folder", root, videos, unlistable)
    if tars:
        return VideoInput("shards", root, tars)
    raise UserError(
        f"{src}: no videos found (looked for {' '.join(VIDEO_EXTENSIONS)} and .tar shards)"
    )


# --- folders ---------------------------------------------------------------------------------


def _folder_records(found: VideoInput) -> Iterator[Record]:
    relatives = [file.relative_to(found.root) for file in found.files]
    keys = unique_keys([(path_key(rel), rel.suffix.lower(), rel.as_posix()) for rel in relatives])
    for file, relative, key in zip(found.files, relatives, keys, strict=True):
        source = relative.as_posix()
        if file in found.unlistable:
            yield Record(key, source, path=str(file), error="unreadable: cannot list folder")
            continue
        parts = relative.parent.parts
        label = parts[-1] if parts else None
        meta = {"split": parts[-2]} if len(parts) >= 2 else {}
        yield Record(key, source, path=str(file), label=label, meta=meta)


# --- shards ----------------------------------------------------------------------------------


def _video_group_record(sample: ShardSample, tar_key: str, seen: set[str]) -> Record:
    """A shard sample with a video member (re-captioning): its label from the json, its old
    caption as `text`. A json that does not parse fails the sample: it is where the label is."""
    video = sample.media(VIDEO_EXTENSIONS, "video", sample.key(), seen)
    if isinstance(video, Record):
        return video
    name, data = video
    key = claim_key(sample.key(), sample.source(name), seen)
    meta, problem = sample.json()
    if problem is not None:
        return Record(key, sample.source(name), error=problem)
    text, notes = bounded_text(sample.text())
    label = meta.get("label")
    return Record(key, sample.source(name), data=data, text=text,
                  label=str(label) if label not in (None, "") else None,
                  meta={"source_json": meta} if meta else {}, notes=notes)


# --- annotations -----------------------------------------------------------------------------


def _resolve_rows(
    root: Path, videos: list[Path], annotations: Sequence[str | os.PathLike]
) -> list[dict[str, Any]]:
    """Annotation rows as dicts (`key`, `source`, `path` or `error`, `label`, `start`,
    `end`, `meta`), in file order, each matched to a video under SRC."""
    by_stem: dict[str, list[Path]] = {}
    by_name: dict[str, list[Path]] = {}
    for video in videos:
        by_stem.setdefault(video.stem, []).append(video)
        by_name.setdefault(video.name, []).append(video)
    files = [Path(a) for a in annotations]
    for file in files:
        if not file.is_file():
            raise UserError(f"--annotations {file}: no such file")
    kinds = {file: _annotation_kind(file) for file in files}
    label_lists = [f for f in files if kinds[f] == "videolt-labels"]
    class_lists = [f for f in files if kinds[f] == "class-names"]
    rows: list[dict[str, Any]] = []
    for file in files:
        kind = kinds[file]
        if kind == "kinetics":
            rows.extend(_kinetics_rows(file, root, by_stem))
        elif kind == "paths":
            rows.extend(_path_rows(file, root, by_name))
        elif kind in ("videolt", "videolt-folder"):
            names = _videolt_names(label_lists or _siblings(file, "videolt-labels"), file)
            rows.extend(_videolt_rows(file, names, by_stem))
        elif kind == "mmaction":
            names = _class_names(class_lists or _siblings(file, "class-names"), file)
            rows.extend(_mmaction_rows(file, names, root, by_name))
    if not rows:
        raise UserError(
            "--annotations: no video rows in "
            + ", ".join(str(f) for f in files)
            + " (a VideoLT label list or a class-index file needs its video list too)"
        )
    keys = unique_keys([(row.pop("key_base"), "", f"{i}:{row['source']}")
                        for i, row in enumerate(rows)])
    for row, key in zip(rows, keys, strict=True):
        row["key"] = key
    listed = {row["path"] for row in rows if row.get("path")}
    extra = sum(1 for video in videos if str(video) not in listed)
    if extra:
        logger.warning("%d video file(s) under %s are not in the annotations and are not "
                       "captioned", extra, root)
    return rows


def _read_text(file: Path) -> str:
    try:
        return file.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as error:
        raise UserError(f"--annotations {file}: cannot read ({error.strerror or error})") from None


def _csv_rows(file: Path) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(_read_text(file))) if any(c.strip() for c in row)]


def _annotation_kind(file: Path) -> str:
    """kinetics, paths, videolt or videolt-labels, from the file's first lines."""
    text = _read_text(file)
    lines = [line for line in text.splitlines() if line.strip()][:5]
    if not lines:
        raise UserError(f"--annotations {file}: empty file")
    header = {c.strip().lower() for c in next(csv.reader([lines[0]]))}
    if header >= _KINETICS_COLUMNS:
        return "kinetics"
    if header & set(_PATH_COLUMNS) and header & set(_LABEL_COLUMNS):
        return "paths"
    first = next(csv.reader([lines[0]]))
    if "," in lines[0] and first[0].strip().lower().endswith(VIDEO_EXTENSIONS):
        return "paths"
    fields = [line.split() for line in lines]
    if all(len(f) >= 2 and f[0].lower().endswith(VIDEO_EXTENSIONS)
           and all(x.isdigit() for x in f[1:]) for f in fields):
        return "mmaction"  # PATH.mp4 LABEL_ID [LABEL_ID...] (mmaction2's VideoDataset)
    if all(len(f) == 3 and f[1].isdigit() and re.fullmatch(r"(\d+,)+", f[2]) for f in fields):
        return "videolt-folder"  # CLASS/VIDEO_ID FRAMES IDS, (labels/*_videofolder.txt)
    if all(len(f) >= 2 and f[1].isdigit() and (len(f) == 2 or _is_number(f[2]))
           for f in fields) and any(len(f) == 3 for f in fields):
        return "videolt-labels"  # NAME ID COUNT (count-labels-train.lst)
    if all(len(f) == 2 and re.fullmatch(r"\d+(,\d+)*", f[1]) for f in fields):
        return "videolt"  # VIDEO_ID IDS (train.lst)
    if all("," not in line and "\t" not in line and not line.split()[-1].isdigit()
           for line in lines):
        return "class-names"  # one class name per line, line i is class i (label_map_k400.txt)
    raise UserError(
        f"--annotations {file}: not a known annotation file (expected a Kinetics CSV with "
        "label,youtube_id,time_start,time_end; a CSV with path and label columns; Moments in "
        "Time's csv; VideoLT's video, videofolder and label lists; or an mmaction2 video list "
        "with its class-index file)"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _kinetics_rows(file: Path, root: Path, by_stem: dict[str, list[Path]]) -> list[dict]:
    table = _csv_rows(file)
    header = [c.strip().lower() for c in table[0]]
    column = {name: header.index(name) for name in header}
    rows = []
    for number, cells in enumerate(table[1:], start=2):
        def cell(name: str, cells=cells) -> str:
            index = column.get(name)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        label = cell("label") or None
        youtube_id = cell("youtube_id")
        source = f"{file.name}:{number}"
        row: dict[str, Any] = {"label": label, "meta": {"annotations": str(file), "line": number}}
        if cell("split"):
            row["meta"]["split"] = cell("split")
        times = segment_times(cell("time_start"), cell("time_end"))
        if isinstance(times, str):
            rows.append({**row, "key_base": sanitize(youtube_id or f"row_{number}"),
                         "source": source,
                         "error": f"bad annotation: {times} on line {number} of {file.name}"})
            continue
        start, end = times
        clip = f"{youtube_id}_{int(start):06d}_{int(end):06d}"  # as Kinetics names its clips
        row["key_base"] = f"{sanitize(label)}__{sanitize(clip)}" if label else sanitize(clip)
        if clip in by_stem:
            path = by_stem[clip][0]
            rows.append({**row, "path": str(path), "source": _relative(path, root)})
        elif youtube_id in by_stem:
            path = by_stem[youtube_id][0]
            rows.append({**row, "path": str(path), "source": _relative(path, root),
                         "start": start, "end": end})
        else:
            rows.append({**row, "source": source,
                         "error": f"missing file: no {clip}.* or {youtube_id}.* under SRC"})
    return rows


def segment_times(start: str, end: str) -> tuple[float, float] | str:
    """A Kinetics row's [time_start, time_end] in seconds, fractions kept (other sets' lists
    carry them: a cut to whole seconds moved clips by up to a second), or why they are no
    segment."""
    try:
        times = float(start), float(end)
    except ValueError:
        return "time_start/time_end are not numbers"
    if not all(math.isfinite(t) for t in times):
        return f"time_start/time_end must be finite (got {start}, {end})"
    if times[0] < 0 or times[1] <= times[0]:
        return f"the segment [{start}, {end}] is empty or starts before 0"
    return times


def _path_rows(file: Path, root: Path, by_name: dict[str, list[Path]]) -> list[dict]:
    table = _csv_rows(file)
    header = [c.strip().lower() for c in table[0]]
    if set(header) & set(_PATH_COLUMNS) and set(header) & set(_LABEL_COLUMNS):
        path_index = next(header.index(c) for c in _PATH_COLUMNS if c in header)
        label_index = next(header.index(c) for c in _LABEL_COLUMNS if c in header)
        body, first_line = table[1:], 2
    else:  # Moments in Time: LABEL/FILE.mp4,LABEL,agreement,disagreement (no header)
        path_index, label_index, body, first_line = 0, 1, table, 1
    rows = []
    for number, cells in enumerate(body, start=first_line):
        relative = cells[path_index].strip() if path_index < len(cells) else ""
        label = cells[label_index].strip() if label_index < len(cells) else ""
        row: dict[str, Any] = {"label": label or None,
                               "meta": {"annotations": str(file), "line": number},
                               "key_base": path_key(relative) if relative else f"row_{number}"}
        path = _find_video(relative, root, by_name) if relative else None
        if path is not None:
            rows.append({**row, "path": str(path), "source": _relative(path, root)})
        else:
            rows.append({**row, "source": relative or f"{file.name}:{number}",
                         "error": f"missing file: {relative or '(empty path)'} is not under SRC"
                         if relative else f"bad annotation: empty path on line {number}"})
    return rows


def _siblings(video_list: Path, kind: str) -> list[Path]:
    """Files beside a video list, named like a label list ("label", "class" in the name),
    whose content is of `kind` (its label list or class-index file, found by itself)."""
    return sorted(p for p in video_list.parent.iterdir()
                  if p != video_list and p.is_file()
                  and any(word in p.name.lower() for word in ("label", "class"))
                  and _annotation_kind_or_none(p) == kind)


def _annotation_kind_or_none(file: Path) -> str | None:
    try:
        return _annotation_kind(file)
    except UserError:
        return None


def _videolt_names(label_lists: list[Path], video_list: Path) -> dict[int, str]:
    if not label_lists:
        raise UserError(f"--annotations {video_list}: a VideoLT video list needs its label list "
                        "(NAME ID COUNT per line, e.g. count-labels-train.lst); pass it too")
    names: dict[int, str] = {}
    for file in label_lists:
        for line in _read_text(file).splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                names[int(fields[1])] = fields[0]
    return names


def _class_names(class_lists: list[Path], video_list: Path) -> dict[int, str]:
    if not class_lists:
        raise UserError(f"--annotations {video_list}: an mmaction2 video list needs its "
                        "class-index file (one class name per line, line 0 is class 0, e.g. "
                        "label_map_k400.txt); pass it too")
    lines = [line.strip() for line in _read_text(class_lists[0]).splitlines() if line.strip()]
    return dict(enumerate(lines))


def _labelled(ids: list[int], names: dict[int, str], file: Path, number: int) -> dict:
    """A row's label (several names joined by ", ") and meta from class ids."""
    labels = [names.get(i, f"class {i}") for i in ids]
    row: dict[str, Any] = {"label": ", ".join(labels) or None,
                           "meta": {"annotations": str(file), "line": number,
                                    "labels": labels, "label_ids": ids}}
    unknown = [i for i in ids if i not in names]
    if unknown:
        row["meta"]["unknown_label_ids"] = unknown
    return row


def _videolt_rows(file: Path, names: dict[int, str], by_stem: dict[str, list[Path]]) -> list:
    """Rows of a VideoLT video list, `VIDEO_ID IDS` (train.lst) or `CLASS/VIDEO_ID FRAMES
    IDS,` (videofolder): the video is found by its id, the label by the ids."""
    rows = []
    for number, line in enumerate(_read_text(file).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        video_id = PurePosixPath(fields[0]).name  # the class folder is "multiple" for several
        ids = [int(i) for i in fields[-1].split(",") if i] if len(fields) > 1 else []
        row = {**_labelled(ids, names, file, number), "key_base": sanitize(video_id)}
        if video_id in by_stem:
            path = by_stem[video_id][0]
            rows.append({**row, "path": str(path), "source": path.name})
        else:
            rows.append({**row, "source": f"{file.name}:{number}",
                         "error": f"missing file: no {video_id}.* under SRC"})
    return rows


def _mmaction_rows(file: Path, names: dict[int, str], root: Path,
                   by_name: dict[str, list[Path]]) -> list:
    """Rows of an mmaction2 video list, `PATH LABEL_ID [LABEL_ID...]`: the path relative to
    SRC (or found by its file name), the label from the class-index file."""
    rows = []
    for number, line in enumerate(_read_text(file).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        relative = fields[0]
        row = {**_labelled([int(i) for i in fields[1:]], names, file, number),
               "key_base": path_key(relative)}
        path = _find_video(relative, root, by_name)
        if path is not None:
            rows.append({**row, "path": str(path), "source": _relative(path, root)})
        else:
            rows.append({**row, "source": relative,
                         "error": f"missing file: {relative} is not under SRC"})
    return rows


def _find_video(relative: str, root: Path, by_name: dict[str, list[Path]]) -> Path | None:
    """The video a list names: SRC/relative, else the only video under SRC of that name."""
    candidate = root / relative
    if candidate.is_file():
        return candidate
    same_name = by_name.get(PurePosixPath(relative).name, [])
    return same_name[0] if len(same_name) == 1 else None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _annotation_records(found: VideoInput) -> Iterator[Record]:
    for row in found.rows:
        yield Record(row["key"], row["source"], path=row.get("path"), label=row.get("label"),
                     meta=row.get("meta", {}), error=row.get("error"),
                     start=row.get("start"), end=row.get("end"))
