"""manifests.sources: image folders, img2dataset shards and list files become keyed records."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datakit.io.errors import UserError
from datakit.io.images import ImageError, load_image
from datakit.run.shards import check_key
from manifests.sources import Record, count_records, path_key, read_records, unique_keys


def write_image(path: Path, value: int = 0, fmt: str | None = None) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (value, 0, 0)).save(buffer, fmt or "JPEG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def by_key(records: list[Record]) -> dict[str, Record]:
    return {record.key: record for record in records}


def assert_valid_keys(records: list[Record]) -> None:
    keys = [record.key for record in records]
    assert len(set(keys)) == len(keys)
    for key in keys:
        check_key(key)


# --- image folders -----------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    write_image(root / "cats" / "photo.jpg", 10)
    (root / "cats" / "photo.txt").write_text("a cat on a mat\n")
    (root / "cats" / "photo.json").write_text(json.dumps({"url": "http://x/1", "width": 8}))
    write_image(root / "dogs" / "photo.jpg", 20)
    write_image(root / "dogs" / "deep" / "more" / "Big Dog!.JPEG", 30)
    write_image(root / "top.png", 40, "PNG")
    (root / "notes.txt").write_text("not an image")
    write_image(root / ".thumbs" / "hidden.jpg")
    write_image(root / ".hidden.jpg")
    return root


def test_folder_is_walked_recursively_with_sidecars(folder):
    records = list(read_records(folder))
    assert [r.key for r in records] == [
        "cats__photo",
        "dogs__deep__more__Big_Dog_",
        "dogs__photo",
        "top",
    ]
    cat = records[0]
    assert cat.text == "a cat on a mat"
    assert cat.meta == {"url": "http://x/1", "width": 8}
    assert cat.path == str(folder / "cats" / "photo.jpg")
    assert cat.source == "cats/photo.jpg"  # relative to SRC, wherever the command ran
    assert cat.data is None and cat.label is None and cat.error is None
    assert records[2].text is None and records[2].meta == {}
    assert load_image(records[1].image_input())[0, 0, 0] == pytest.approx(30, abs=3)
    assert_valid_keys(records)
    assert count_records(folder) == 4


def test_captions_saved_with_a_byte_order_mark_read_as_without(tmp_path):
    """Notepad's UTF-8 starts a sidecar with a BOM; it was the caption's first character."""
    write_image(tmp_path / "photos" / "a.jpg")
    (tmp_path / "photos" / "a.txt").write_bytes("\ufeffa red square".encode())
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("b.jpg", write_image(tmp_path / "b.jpg")),
                           ("b.txt", "\ufeffa blue square".encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert [r.text for r in read_records(tmp_path / "photos")] == ["a red square"]
    assert [r.text for r in read_records(shard)] == ["a blue square"]


def test_phone_and_web_formats_are_inputs(tmp_path):
    """.heic, .avif and .jfif files were skipped without a row."""
    for name in ("a.heic", "b.avif", "c.jfif", "d.JPE", "e.txt"):
        write_image(tmp_path / "in" / name)
    assert [r.key for r in read_records(tmp_path / "in")] == ["a", "b", "c", "d"]


def test_keys_are_stable_and_records_picklable(folder):
    first = list(read_records(folder))
    assert first == list(read_records(str(folder)))
    assert pickle.loads(pickle.dumps(first)) == first


def test_same_name_in_two_folders_gets_two_keys(folder):
    keys = {r.key for r in read_records(folder)}
    assert {"cats__photo", "dogs__photo"} <= keys


def test_sanitising_collisions_are_disambiguated(tmp_path):
    for name in ["a b.jpg", "a_b.jpg", "x.jpg", "x.png", "x_jpg.png", "été.jpg", "ete.jpg"]:
        write_image(tmp_path / name)
    records = list(read_records(tmp_path))
    assert_valid_keys(records)
    keys = {Path(r.source).name: r.key for r in records}
    assert keys["ete.jpg"] == "ete" and keys["été.jpg"] == "_t_"
    assert keys["x.png"] == "x_png"
    # "a b" and "a_b" clash even with the extension: a hash of the relative path settles it
    assert keys["a b.jpg"].startswith("a_b_jpg_") and keys["a_b.jpg"].startswith("a_b_jpg_")
    # "x.jpg" -> "x_jpg" would clash with "x_jpg.png" -> hashes; stable on a second listing
    assert keys == {Path(r.source).name: r.key for r in read_records(tmp_path)}


def test_unique_keys_steps():
    assert unique_keys([("a", ".jpg", "a.jpg"), ("b", ".jpg", "b.jpg")]) == ["a", "b"]
    assert unique_keys([("a", ".jpg", "a.jpg"), ("a", ".png", "a.png")]) == ["a_jpg", "a_png"]
    hashed = unique_keys([("a_b", ".jpg", "a b.jpg"), ("a_b", ".jpg", "a_b.jpg")])
    assert hashed[0] != hashed[1] and all(k.startswith("a_b_jpg_") for k in hashed)
    assert path_key("x/y z/photo.final.jpg") == "x__y_z__photo_final"


def test_bad_files_are_still_listed(tmp_path):
    write_image(tmp_path / "good.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "page.jpg").write_text("<html></html>")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    good = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    records = by_key(read_records(tmp_path))
    assert sorted(records) == ["cut", "empty", "gone", "good", "page"]
    reasons = {}
    for key, record in records.items():
        try:
            load_image(record.image_input())
        except ImageError as error:
            reasons[key] = str(error).split(":")[0]
    assert reasons == {
        "cut": "truncated image",
        "empty": "empty file",
        "gone": "dangling symlink",
        "page": "not an image",
    }


def test_unlistable_subfolder_becomes_a_failed_record(tmp_path, monkeypatch):
    write_image(tmp_path / "ok.jpg")
    write_image(tmp_path / "locked" / "a.jpg")
    scandir = os.scandir

    def denied(path="."):  # what a folder without read permission does (tests run as root)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    records = by_key(read_records(tmp_path))
    assert sorted(records) == ["locked", "ok"]
    assert records["locked"].error == "unreadable: cannot list folder"
    with pytest.raises(ImageError, match="^unreadable"):
        records["locked"].image_input()
    assert records["ok"].error is None


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        read_records(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no images found \(looked for .jpg"):
        read_records(tmp_path / "empty")
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(UserError, match="not a folder, a .tar shard or a .csv/.parquet list"):
        read_records(tmp_path / "readme.md")
    mixed = tmp_path / "mixed"
    write_image(mixed / "a.jpg")
    (mixed / "b.tar").write_bytes(b"")
    with pytest.raises(UserError, match="holds both images"):
        read_records(mixed)


# --- img2dataset shards ------------------------------------------------------------------------


def write_shard(path: Path, samples: list[dict]) -> None:
    import webdataset as wds

    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as writer:
        for sample in samples:
            writer.write(sample)


def laion_sample(key: str, value: int) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (value, 0, 0)).save(buffer, "JPEG")
    meta = {"url": f"http://example.com/{key}.jpg", "key": key, "width": 8, "height": 6}
    return {
        "__key__": key,
        "jpg": buffer.getvalue(),
        "txt": f"caption {key}",
        "json": json.dumps(meta).encode(),
    }


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    root = tmp_path / "laion"
    write_shard(root / "00000.tar", [laion_sample("000000000", 10), laion_sample("000000001", 20)])
    write_shard(
        root / "00001.tar",
        [laion_sample("000010000", 30), {"__key__": "000010001", "txt": "no image here"}],
    )
    for stem, successes in (("00000", 2), ("00001", 1)):
        (root / f"{stem}_stats.json").write_text(json.dumps({"successes": successes}))
    (root / "00000.parquet").write_bytes(b"img2dataset writes these too")
    return root


def test_shard_folder_members_become_records(shards):
    records = list(read_records(shards))
    assert [r.key for r in records] == ["00000__000000000", "00000__000000001",
                                        "00001__000010000", "00001__000010001"]
    # a sample with a caption but no image is a failed record, not a silence
    assert records[3].error == "no image: the shard sample has txt but no image member"
    assert records[3].source == "00001.tar::000010001"
    records = records[:3]
    first = records[0]
    assert first.source == "00000.tar::000000000.jpg"  # relative to SRC
    assert first.path is None and first.text == "caption 000000000"
    assert first.meta["url"] == "http://example.com/000000000.jpg" and first.meta["width"] == 8
    assert load_image(first.image_input())[0, 0, 0] == pytest.approx(10, abs=3)
    assert_valid_keys(records)
    assert pickle.loads(pickle.dumps(records)) == records
    assert count_records(shards) == 3


def test_single_tar_is_a_source(shards):
    records = list(read_records(shards / "00001.tar"))
    assert [r.key for r in records] == ["00001__000010000", "00001__000010001"]
    assert records[1].error.startswith("no image")
    assert count_records(shards / "00001.tar") == 1


def test_png_and_webp_members_and_sanitised_member_keys(tmp_path):
    png, webp = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (4, 4), (0, 0, 200)).save(png, "PNG")
    Image.new("RGB", (4, 4), (0, 200, 0)).save(webp, "WEBP")
    write_shard(
        tmp_path / "s.tar",
        [
            {"__key__": "a b", "png": png.getvalue()},
            {"__key__": "a_b", "webp": webp.getvalue()},
        ],
    )
    records = list(read_records(tmp_path / "s.tar"))
    assert_valid_keys(records)
    assert records[0].key == "s__a_b" and records[1].key.startswith("s__a_b_")
    assert load_image(records[1].image_input())[0, 0, 1] > 150


def test_corrupt_shard_among_good_ones_becomes_a_failed_record(shards):
    good = (shards / "00000.tar").read_bytes()
    with tarfile.open(shards / "00000.tar") as tar:
        second = next(m for m in tar.getmembers() if m.name.startswith("000000001"))
    (shards / "00002.tar").write_bytes(good[: second.offset_data + 10])  # cut in sample two
    (shards / "00003.tar").write_bytes(b"this is not a tar file at all" * 40)
    records = by_key(read_records(shards))
    assert "00002__000000000" in records  # what came before the break is kept
    broken = records["00002"]
    assert broken.error.startswith("corrupt shard: ") and broken.error.endswith("(after 1 samples)")
    assert broken.path == str(shards / "00002.tar") and broken.source == "00002.tar"
    assert records["00003"].error.startswith("corrupt shard: ")
    with pytest.raises(ImageError, match="^corrupt shard: "):
        broken.image_input()
    assert_valid_keys(list(records.values()))


def test_unreadable_single_shard_is_a_user_error(tmp_path):
    (tmp_path / "bad.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(UserError, match="bad.tar: cannot read shard"):
        read_records(tmp_path / "bad.tar")


def test_shard_folder_records_match_webdataset_grouping(shards):
    import webdataset as wds

    dataset = wds.WebDataset(str(shards / "00000.tar"), shardshuffle=False)
    expected = [(s["__key__"], s["txt"].decode()) for s in dataset]
    got = [(r.key.split("__")[1], r.text) for r in read_records(shards / "00000.tar")]
    assert got == expected


# --- list files --------------------------------------------------------------------------------


@pytest.fixture
def listed(tmp_path: Path) -> Path:
    write_image(tmp_path / "images" / "one.jpg", 10)
    write_image(tmp_path / "images" / "sub" / "one.jpg", 20)
    write_image(tmp_path / "elsewhere" / "my photo.png", 30, "PNG")
    return tmp_path


def test_csv_with_relative_paths(listed):
    lists = listed / "lists"
    lists.mkdir()
    pd.DataFrame(
        {
            "path": ["../images/one.jpg", "../images/sub/one.jpg", "../images/missing.jpg"],
            "caption": ["first", "", "third"],
            "label": ["cat", "dog", ""],
        }
    ).to_csv(lists / "train.csv", index=False)
    records = list(read_records(lists / "train.csv"))
    assert [r.key for r in records] == ["images__one", "images__sub__one", "images__missing"]
    assert [r.text for r in records] == ["first", None, "third"]
    assert [r.label for r in records] == ["cat", "dog", None]
    assert load_image(records[1].image_input())[0, 0, 0] == pytest.approx(20, abs=3)
    assert Path(records[0].path).resolve() == (listed / "images" / "one.jpg").resolve()
    assert records[2].error is None  # a missing file fails when loaded, like any bad file
    assert count_records(lists / "train.csv") == 3


def test_parquet_with_file_urls_and_keys(listed):
    target = listed / "elsewhere" / "my photo.png"
    pd.DataFrame(
        {
            "url": [target.as_uri(), str(listed / "images" / "one.jpg"), "https://x.org/a.jpg"],
            "text": ["a photo", None, "remote"],
            "key": ["k.1", "", "remote"],
            "embedding": [np.zeros(4, np.float32)] * 3,  # LAION lists carry these: not loaded
        }
    ).to_parquet(listed / "list.parquet")
    records = list(read_records(listed / "list.parquet"))
    assert records[0].key == "k_1" and records[0].path == str(target)
    assert load_image(records[0].image_input())[0, 0, 0] == pytest.approx(30, abs=1)
    assert records[1].key.endswith("images__one") and records[1].text is None
    assert records[2].error.startswith("remote url: https://x.org/a.jpg")
    with pytest.raises(ImageError, match="^remote url"):
        records[2].image_input()
    assert_valid_keys(records)


def test_list_errors(tmp_path):
    pd.DataFrame({"file": ["a.jpg"]}).to_csv(tmp_path / "nocol.csv", index=False)
    with pytest.raises(UserError, match=r"nocol.csv: needs a 'path' or 'url' column \(found: file"):
        read_records(tmp_path / "nocol.csv")
    pd.DataFrame({"path": []}).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(UserError, match="empty.csv: the list has no rows"):
        read_records(tmp_path / "empty.csv")
    pd.DataFrame({"url": ["http://a/1.jpg"]}).to_csv(tmp_path / "urls.csv", index=False)
    with pytest.raises(UserError, match="urls.csv: no row names a local file"):
        read_records(tmp_path / "urls.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="broken.parquet: cannot read list"):
        read_records(tmp_path / "broken.parquet")


def test_image_input_prefers_bytes():
    assert Record("k", "a.tar::k.jpg", data=b"abc").image_input() == b"abc"
    assert Record("k", "k.jpg", path="k.jpg").image_input() == "k.jpg"
    assert Record("k", "k.jpg", path="k.jpg", data=b"").image_input() == b""
