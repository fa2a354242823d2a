"""Turn an input (an image folder, img2dataset shards, or a list file) into records.

A record names one input image: a stable key, where it came from, its file path or the bytes
already read from a shard, and its caption and metadata. `read_records` detects the kind:

- an image folder, searched recursively (.jpg .jpeg .png .webp .bmp .tif .tiff .gif, any
  case; an animated GIF gives its first frame);
  `NAME.txt` next to `NAME.jpg` is the caption and `NAME.json` goes into `meta`, as
  img2dataset writes them; hidden files and folders are skipped, symlinked folders are not
  followed;
- img2dataset / LAION WebDataset shards: a `.tar` file, or a folder of them (searched
  recursively); members are grouped by key (the name up to the first dot of the basename, as
  webdataset does) and a group needs an image member; its `txt` is the caption and its `json`
  the metadata;
- a `.csv` or `.parquet` list with a `path` column (relative paths are resolved against the
  list's folder) or a `url` column holding a local path or `file://` URL, and optional
  `text`/`caption`, `label` and `key` columns.

A folder holding both images and `.tar` files is refused as ambiguous: point SRC at one kind.
A datakit output folder inside SRC (one with `.datakit/`) is skipped: `--out` may live there.

Keys come from the relative path: folder parts and the stem joined with `__`, every character
outside [A-Za-z0-9_-] replaced by `_` (`a/b c/photo.jpg` -> `a__b_c__photo`); shard members
get `{shard path key}__{member key}`. Keys that collide are disambiguated deterministically:
first by the file extension (`x.jpg`, `x.png` -> `x_jpg`, `x_png`), then by a short hash of
the relative path. Keys therefore stay stable across runs as long as the input does not gain
a file that collides with an existing one.

Record paths are absolute (SRC is made absolute first): a worker on a Ray node runs in
another folder than the command that typed `photos/`.

Nothing readable is dropped: dangling symlinks, empty and unreadable files become records like
any other and fail when a worker loads them. An input the listing already knows to be broken
(a corrupt or unreadable shard, a folder that cannot be listed, a list row without a local
path) becomes one record with `error` set; `Record.image_input()` raises that error, so the
pipeline writes a failed manifest row for it through the same path as any bad image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from datakit.io.errors import UserError
from datakit.io.files import special_kind

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff",
                    ".gif", ".avif", ".heic", ".heif")
SHARD_EXTENSION = ".tar"
LIST_EXTENSIONS = (".csv", ".parquet")
_LIST_COLUMNS = ("path", "url", "text", "caption", "label", "key")

MAX_LABEL_CHARS = 300
"""A class label longer than this is refused (the record fails with the reason): labels name
classes ("abseiling", VideoLT's several names joined); 200,000 characters is not a label."""
MAX_TEXT_CHARS = 1000
"""Captions read from the input (a shard's `txt`, a sidecar, a list's text column) are cut
to this many characters, at a word boundary, with a note on the row: LAION's alt texts are
far shorter, and a 200 KB caption would become a 200 KB training caption."""
TEXT_CUT_NOTE = f"input caption cut to {MAX_TEXT_CHARS} characters"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError)
_ACCESS_ERRORS = (PermissionError, FileNotFoundError, IsADirectoryError)


@dataclass(frozen=True)
class Record:
    """One input image, picklable so it can travel to a worker process.

    Args:
        key: stable, unique within the input, without '.' or '/'.
        source: where it came from: the file path, or `"TAR::MEMBER"` for a shard member.
        path: the file to read, or None when `data` holds the bytes.
        data: the file's bytes, already read (shard members).
        text: the caption, if the input has one.
        label: the class label, if the input has one.
        meta: JSON-able metadata (e.g. img2dataset's json: url, width, height, ...).
        error: set when the listing already found this input unreadable (e.g. a corrupt
            shard); the reason reads like an image error, "kind: detail".
        start, end: for a video, the part of the file this record covers, in seconds (None:
            from the start / to the end), e.g. a Kinetics clip inside its whole source video.
        notes: what the listing changed or ignored in this input (a caption cut to
            `MAX_TEXT_CHARS`, an unreadable json); the pipeline adds them to every manifest
            row the record gives.
    """

    key: str
    source: str
    path: str | None = None
    data: bytes | None = None
    text: str | None = None
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False)
    error: str | None = None
    start: float | None = None
    end: float | None = None
    notes: tuple[str, ...] = ()

    def image_input(self) -> str | bytes:
        """What `datakit.io.images.load_image` should read: the bytes, else the path.

        Raises:
            ImageError: the record carries a listing-time `error`.
        """
        if self.error is not None:
            from datakit.io.images import ImageError

            raise ImageError(self.error)
        return self.data if self.data is not None else self.path

    def video_input(self) -> str | bytes:
        """What `datakit.io.video` should read: the bytes, else the path.

        Raises:
            VideoError: the record carries a listing-time `error`.
        """
        if self.error is not None:
            from datakit.io.video import VideoError

            raise VideoError(self.error)
        return self.data if self.data is not None else self.path


@dataclass(frozen=True)
class _Input:
    kind: str  # "images", "shards" or "list"
    root: Path
    files: list[Path] = field(default_factory=list)  # images or tars, sorted
    unlistable: frozenset[Path] = frozenset()  # subfolders that could not be listed


def read_records(src: str | os.PathLike) -> Iterator[Record]:
    """Records of SRC in a deterministic order (sorted by path; shard members in tar order).

    SRC is checked now; the records are produced lazily, so huge inputs start at once.

    Args:
        src: an image folder, a `.tar` shard or a folder of them, or a `.csv`/`.parquet` list.

    Raises:
        UserError: SRC is missing, of no supported kind, holds no images, is a list without a
            `path` or `url` column, or is a single shard that cannot be opened.
    """
    found = _detect(src)
    if found.kind == "images":
        return _folder_records(found)
    if found.kind == "shards":
        if found.root.is_file():
            check_tar(found.root)
        return shard_records(found.root, found.files)
    return _list_records(found.root)


def count_records(src: str | os.PathLike) -> int | None:
    """How many records `read_records` will produce, if cheap to know (for a progress bar).

    Image folders and lists are counted exactly; shards by img2dataset's `*_stats.json`
    ("successes") when every shard has one, else None.

    Args:
        src: as for `read_records`.
    """
    found = _detect(src)
    if found.kind == "images":
        return len(found.files)
    if found.kind == "shards":
        total = 0
        for tar in found.files:
            stats = tar.with_name(f"{tar.stem}_stats.json")
            try:
                total += int(json.loads(stats.read_text())["successes"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return total
    columns = _read_list(found.root)
    return len(columns["path"] if "path" in columns else columns["url"])


# --- detection -------------------------------------------------------------------------------


def _detect(src: str | os.PathLike) -> _Input:
    """What SRC is and the files it holds, or a UserError saying why it is no input."""
    root = Path(src).absolute()  # records carry paths a worker in another folder can open
    if not root.exists():
        raise UserError(f"{src}: no such file or folder")
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == SHARD_EXTENSION:
            return _Input("shards", root, [root])
        if suffix in LIST_EXTENSIONS:
            return _Input("list", root)
        raise UserError(
            f"{src}: not a folder, a .tar shard or a .csv/.parquet list (got a {suffix or 'file'}"
            " file)"
        )
    if not root.is_dir():
        raise UserError(f"{src}: not a folder, a .tar shard or a .csv/.parquet list")
    images, tars, unlistable = scan_folder(root)
    if images and tars:
        raise UserError(
            f"{src}: holds both images ({len(images)}) and .tar shards ({len(tars)}); "
            "point SRC at a folder of one kind"
        )
    if images:
        return _Input("images", root, images, unlistable)
    if tars:
        return _Input("shards", root, tars)
    raise UserError(
        f"{src}: no images found (looked for {' '.join(IMAGE_EXTENSIONS)} and .tar shards)"
    )


def scan_folder(
    root: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> tuple[list[Path], list[Path], frozenset[Path]]:
    """Media files (images, or the given `extensions`) and tar files under root, sorted,
    skipping hidden names. Subfolders that cannot be listed are returned among the media
    too, so each becomes a failed record."""
    images: list[Path] = []
    tars: list[Path] = []
    unlistable: list[Path] = []

    def on_error(error: OSError) -> None:
        if Path(error.filename) == root:
            raise UserError(f"{root}: cannot read folder: {_reason(error)}")
        logger.warning("cannot list %s: %s", error.filename, _reason(error))
        unlistable.append(Path(error.filename))

    for folder, dirs, names in os.walk(root, onerror=on_error):
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(".") and not _is_output(Path(folder, d)))
        for name in names:
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in extensions:
                images.append(Path(folder, name))
            elif suffix == SHARD_EXTENSION:
                tars.append(Path(folder, name))
    return sorted(images + unlistable), sorted(tars), frozenset(unlistable)


def _is_output(folder: Path) -> bool:
    """A datakit output folder (it holds `.datakit/config.json`, see manifests.store): never
    read as input, so `--out` may sit inside SRC and a rerun still reads SRC alone."""
    return (folder / ".datakit" / "config.json").is_file()


# --- keys ------------------------------------------------------------------------------------


def sanitize(text: str) -> str:
    """Replace every character outside [A-Za-z0-9_-] by '_' (never returns an empty key)."""
    return _UNSAFE.sub("_", text) or "_"


def path_key(relative: str | os.PathLike) -> str:
    """The key of a relative path: folder parts and the stem joined with '__', sanitised.

    Args:
        relative: the path relative to SRC (absolute paths lose their root, '..' is dropped).
    """
    path = PurePosixPath(Path(relative).as_posix())
    parts = [p for p in path.parent.parts if p not in ("/", ".", "..")]
    return "__".join(sanitize(p) for p in [*parts, path.stem])


def unique_keys(candidates: list[tuple[str, str, str]]) -> list[str]:
    """Make keys unique, deterministically, whatever the order of the candidates.

    Args:
        candidates: (key, extension, identity) per input; a colliding key gets its extension
            appended, and one still colliding a short hash of its identity (e.g. the relative
            path, unique by construction).
    """
    keys = [key for key, _, _ in candidates]
    for step in ("extension", "hash", "full hash"):
        counts = Counter(keys)
        clashing = [i for i, key in enumerate(keys) if counts[key] > 1]
        if not clashing:
            return keys
        for i in clashing:
            _, extension, identity = candidates[i]
            if step == "extension":
                keys[i] = f"{keys[i]}_{sanitize(extension.lstrip('.'))}" if extension else keys[i]
            else:
                digest = hashlib.sha1(identity.encode()).hexdigest()
                keys[i] = f"{keys[i]}_{digest[:8] if step == 'hash' else digest}"
    if len(set(keys)) != len(keys):
        raise RuntimeError("duplicate identities given to unique_keys")
    return keys


# --- image folders ---------------------------------------------------------------------------


def _folder_records(found: _Input) -> Iterator[Record]:
    relatives = [file.relative_to(found.root) for file in found.files]
    keys = unique_keys([(path_key(rel), rel.suffix.lower(), rel.as_posix()) for rel in relatives])
    for file, relative, key in zip(found.files, relatives, keys, strict=True):
        source = relative.as_posix()
        if file in found.unlistable:
            yield Record(key, source, path=str(file), error="unreadable: cannot list folder")
            continue
        text = _read_sidecar(file.with_suffix(".txt"))
        meta = parse_json(_read_sidecar(file.with_suffix(".json")), file)
        if text is None and isinstance(meta.get("caption"), str):
            text = meta["caption"]
        text, notes = bounded_text(text)
        yield Record(key, source, path=str(file), text=text, meta=meta, notes=notes)


def _read_sidecar(path: Path) -> str | None:
    """A sidecar's text (stripped), or None when absent or unreadable (the image still counts)."""
    kind = special_kind(path)
    if kind is not None:
        logger.warning("ignoring sidecar %s: it is %s, not a regular file", path, kind)
        return None
    try:
        return path.read_bytes().decode("utf-8-sig", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        logger.warning("ignoring unreadable sidecar %s: %s", path, error.strerror or error)
        return None


def parse_json(text: str | bytes | None, where: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        logger.warning("ignoring invalid json metadata of %s", where)
        return {}
    return value if isinstance(value, dict) else {"json": value}


# --- shards ----------------------------------------------------------------------------------


def check_tar(path: Path) -> None:
    """A single shard given as SRC must at least open: otherwise the whole input is bad."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            tar.next()
    except _TAR_ERRORS as error:
        raise UserError(f"{path}: cannot read shard: {_reason(error)}") from None


def shard_records(
    root: Path, tars: list[Path], group_record: GroupRecord | None = None
) -> Iterator[Record]:
    """Records of every sample of `tars`; `group_record` turns a sample into a record
    (default: an image sample)."""
    base = root.parent if root.is_file() else root
    relatives = [tar.relative_to(base) for tar in tars]
    tar_keys = unique_keys([(path_key(rel), "", rel.as_posix()) for rel in relatives])
    seen: set[str] = set()  # keys given so far: '__' joins make cross-shard clashes possible
    for tar, relative, tar_key in zip(tars, relatives, tar_keys, strict=True):
        yield from _members(tar, tar_key, seen, group_record or _group_record, relative)


def claim_key(key: str, identity: str, seen: set[str]) -> str:
    """`key`, or when already given, `key` with a short (then full) hash of `identity`."""
    digest = hashlib.sha1(identity.encode()).hexdigest()
    for candidate in (key, f"{key}_{digest[:8]}", f"{key}_{digest}"):
        if candidate not in seen:
            seen.add(candidate)
            return candidate
    raise ValueError(f"{identity} appears twice")


@dataclass
class ShardSample:
    """One sample of a shard: consecutive members whose basenames agree up to the first dot,
    as webdataset groups them.

    Args:
        tar: the shard, as sources name it (relative to SRC's folder).
        folder, stem: where the members sit inside the tar, and their common name.
        members: extension (lower case) -> (member name, bytes), for regular files.
        refused: extension -> (member name, reason), for members that are links or special
            files: never followed nor read, but named, so the sample still gets its row.
    """

    tar: Path
    folder: str
    stem: str
    members: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)

    def source(self, member: str) -> str:
        return f"{self.tar.as_posix()}::{member}"

    def key(self) -> str:
        """The key of the sample's own name (`folder/stem`)."""
        return path_key(PurePosixPath(self.folder, self.stem))

    def media(self, extensions: tuple[str, ...], kind: str, key: str,
              seen: set[str]) -> tuple[str, bytes] | Record:
        """(member name, bytes) of the sample's first member with one of `extensions`, or a
        failed record that says why there is none: the member is a link or a special file,
        or the sample has no such member.

        Args:
            extensions: e.g. IMAGE_EXTENSIONS; kind: how the reason names them ("image").
            key: the record's key (claimed in `seen` for a failed record only).
        """
        for extension, (name, data) in self.members.items():
            if f".{extension}" in extensions:
                return name, data
        for extension, (name, reason) in self.refused.items():
            if f".{extension}" in extensions:
                return Record(claim_key(key, self.source(name), seen), self.source(name),
                              error=reason)
        name = PurePosixPath(self.folder, self.stem).as_posix()
        has = ", ".join(sorted([*self.members, *(f"{e} (refused: {r})"
                                                 for e, (_, r) in self.refused.items())]))
        return Record(claim_key(key, self.source(name), seen), self.source(name),
                      error=f"no {kind}: the shard sample has {has} but no {kind} member")

    def text(self) -> str | None:
        """The `txt` member, stripped (None without one)."""
        if "txt" not in self.members:
            return None
        return self.members["txt"][1].decode("utf-8-sig", errors="replace").strip()

    def json(self) -> tuple[dict[str, Any], str | None]:
        """The `json` member as a dict ({} without one), and why it cannot be read (None when
        it can), naming the member."""
        if "json" not in self.members:
            return {}, None
        name, data = self.members["json"]
        try:
            value = json.loads(data)
        except ValueError as error:
            return {}, f"unreadable json: {name} does not parse ({error})"
        return (value if isinstance(value, dict) else {"json": value}), None


def _members(
    tar_path: Path, tar_key: str, seen: set[str], group_record: GroupRecord,
    relative: Path,
) -> Iterator[Record]:
    """Records of one shard, streamed sample by sample; a shard that breaks part way adds
    one failed record."""
    count = 0
    kind = special_kind(tar_path)
    if kind is not None:
        yield Record(claim_key(tar_key, str(tar_path), seen), relative.as_posix(),
                     path=str(tar_path), error=f"not a regular file: {kind}")
        return
    try:
        with tarfile.open(tar_path, mode="r|*") as tar:
            for sample in _samples(tar, relative):
                count += 1
                yield group_record(sample, tar_key, seen)
            if cut_short(tar, tar_path):
                raise tarfile.ReadError("it ends without tar's end-of-archive block, where a "
                                        "member should begin (cut short?)")
    except _TAR_ERRORS as error:
        kind = "unreadable" if isinstance(error, _ACCESS_ERRORS) else "corrupt shard"
        reason = f"{kind}: {_reason(error)} (after {count} samples)"
        logger.warning("%s: %s", tar_path, reason)
        key = claim_key(tar_key, str(tar_path), seen)
        yield Record(key, relative.as_posix(), path=str(tar_path), error=reason)


def cut_short(tar: tarfile.TarFile, path: Path) -> bool:
    """Whether an uncompressed shard, read to its end, stops where a member's header should
    be instead of at tar's end-of-archive block of zeros: a copy or a download cut at a
    member's edge or inside a header, which `tarfile` ends silently (its samples from there
    on are gone without a word)."""
    if getattr(tar.fileobj, "comptype", "tar") != "tar":
        return False  # a compressed shard's offsets are not the file's
    with open(path, "rb") as file:
        file.seek(tar.offset)
        block = file.read(tarfile.BLOCKSIZE)
    return len(block) < tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE


def _samples(tar: tarfile.TarFile, relative: Path) -> Iterator[ShardSample]:
    """The shard's samples: runs of consecutive members whose basenames agree up to the
    first dot. Folders are skipped; links and special files are kept as refused members."""
    sample: ShardSample | None = None
    for member in tar:
        if member.isdir():
            continue
        folder, name = os.path.split(member.name)
        stem, _, extension = name.partition(".")
        if sample is None or (folder, stem) != (sample.folder, sample.stem):
            if sample is not None:
                yield sample
            sample = ShardSample(relative, folder, stem)
        if member.isfile():
            sample.members[extension.lower()] = (member.name, tar.extractfile(member).read())
        else:
            sample.refused[extension.lower()] = (member.name, not_a_file_reason(member))
    if sample is not None:
        yield sample


def not_a_file_reason(member: tarfile.TarInfo) -> str:
    """Why a tar member is not read: what it is, and where a link points."""
    if member.issym():
        return f"not a regular file: a symbolic link to {member.linkname} (not followed)"
    if member.islnk():
        return f"not a regular file: a hard link to {member.linkname} (not followed)"
    kind = ("a character device" if member.ischr() else "a block device" if member.isblk()
            else "a FIFO" if member.isfifo() else "a special member")
    return f"not a regular file: {kind}"


GroupRecord = Callable[[ShardSample, str, set[str]], Record]


def _group_record(sample: ShardSample, tar_key: str, seen: set[str]) -> Record:
    key = f"{tar_key}__{sample.key()}"
    image = sample.media(IMAGE_EXTENSIONS, "image", key, seen)
    if isinstance(image, Record):
        return image
    name, data = image
    meta, problem = sample.json()
    text = sample.text()
    if text is None and isinstance(meta.get("caption"), str):
        text = meta["caption"]
    text, notes = bounded_text(text)
    if problem is not None:  # the image and its caption still make a clip
        logger.warning("%s: %s; ignored", sample.source(name), problem)
        notes += ("unreadable json member ignored",)
    return Record(claim_key(key, sample.source(name), seen), sample.source(name), data=data,
                  text=text, meta=meta, notes=notes)


def bounded_text(text: str | None) -> tuple[str | None, tuple[str, ...]]:
    """`text` cut to `MAX_TEXT_CHARS` (at the last space before the bound when there is one
    in its second half), and the note that says so."""
    if text is None or len(text) <= MAX_TEXT_CHARS:
        return text, ()
    cut = text[:MAX_TEXT_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > MAX_TEXT_CHARS // 2 else cut).rstrip(), (TEXT_CUT_NOTE,)


def label_error(label: str | None) -> str | None:
    """Why a class label is refused (longer than `MAX_LABEL_CHARS`), or None."""
    if label is None or len(label) <= MAX_LABEL_CHARS:
        return None
    return (f"bad label: {len(label)} characters, more than {MAX_LABEL_CHARS} (a label names "
            "a class; put long text in the caption)")


def _reason(error: BaseException) -> str:
    """A short reason for an error, without the path (the record's source names it)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


# --- list files ------------------------------------------------------------------------------


def _read_list(path: Path) -> dict[str, list[str | None]]:
    """The list's columns that datakit reads (names lower-cased), as text per row: None for
    an empty or missing cell. Other columns (e.g. LAION's embeddings) are not loaded."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            names = [str(name) for name in frame.columns]
        else:
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            wanted = [name for name in names if name.strip().lower() in _LIST_COLUMNS]
            frame = pd.read_parquet(path, columns=wanted)
    except Exception as error:  # pandas and pyarrow raise many types for a malformed file
        raise UserError(f"{path}: cannot read list: {_reason(error)}") from None
    columns: dict[str, list[str | None]] = {}
    for name in frame.columns:
        column = str(name).strip().lower()
        if column in _LIST_COLUMNS and column not in columns:
            values = frame[name].astype(object).where(frame[name].notna(), None)
            columns[column] = [_cell(value) for value in values]
    if "path" not in columns and "url" not in columns:
        found = ", ".join(names) or "none"
        raise UserError(f"{path}: needs a 'path' or 'url' column (found: {found})")
    return columns


def _list_records(path: Path) -> Iterator[Record]:
    columns = _read_list(path)
    locations = columns["path"] if "path" in columns else columns["url"]
    if not locations:
        raise UserError(f"{path}: the list has no rows")
    column = "path" if "path" in columns else "url"
    resolved = [_local_path(value, column) for value in locations]
    if all(error is not None for _, error in resolved):
        raise UserError(f"{path}: no row names a local file (first row: {resolved[0][1]})")
    user_keys = columns.get("key", [None] * len(locations))
    candidates = []
    for i, ((location, _), user_key) in enumerate(zip(resolved, user_keys, strict=True)):
        if user_key is not None:
            base = sanitize(user_key)
        else:
            base = path_key(location) if location else f"row_{i}"
        candidates.append((base, PurePosixPath(location or "").suffix.lower(), f"{i}:{location}"))
    keys = unique_keys(candidates)
    texts = columns.get("text") or columns.get("caption")
    return _list_rows(path, keys, resolved, texts, columns.get("label"))


def _list_rows(
    path: Path,
    keys: list[str],
    resolved: list[tuple[str | None, str | None]],
    texts: list[str | None] | None,
    labels: list[str | None] | None,
) -> Iterator[Record]:
    for i, (key, (location, error)) in enumerate(zip(keys, resolved, strict=True)):
        file = str(path.parent / location) if location else None
        text, notes = bounded_text(texts[i] if texts else None)
        yield Record(
            key,
            location or f"{path.name}::row {i}",  # as the list names it
            path=file,
            text=text,
            notes=notes,
            label=labels[i] if labels else None,
            meta={"list": str(path), "row": i},
            error=error,
        )


def _cell(value: Any) -> str | None:
    """A list cell as text; None for empty and missing values."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _local_path(value: str | None, column: str) -> tuple[str | None, str | None]:
    """(the local path a cell names, None) or (None, the reason it names none)."""
    if value is None:
        return None, f"no path: empty '{column}' cell"
    parsed = urlparse(value)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None, f"remote url: {value}"
        return unquote(parsed.path), None
    if len(parsed.scheme) > 1:  # http:, s3:, ... (one letter would be a Windows drive)
        return None, f"remote url: {value} (download it first, e.g. with img2dataset)"
    return value, None
