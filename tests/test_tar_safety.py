"""Input tars are read, never extracted: odd member names and links cannot reach the disk."""

import io
import tarfile

from PIL import Image

from manifests.sources import read_records


def _jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_odd_members_are_read_in_memory_and_links_are_never_followed(tmp_path):
    shard = tmp_path / "in" / "evil.tar"
    shard.parent.mkdir()
    jpeg = _jpeg()
    with tarfile.open(shard, "w") as tar:
        for name in ("../../escape.jpg", "/abs/root.jpg", "ok/normal.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(jpeg)
            tar.addfile(info, io.BytesIO(jpeg))
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        hard = tarfile.TarInfo("hard.jpg")
        hard.type, hard.linkname = tarfile.LNKTYPE, "ok/normal.jpg"
        tar.addfile(hard)
    before = {p for p in tmp_path.rglob("*")}
    records = list(read_records(shard))
    assert {p for p in tmp_path.rglob("*")} == before  # nothing written anywhere
    assert not (tmp_path.parent / "escape.jpg").exists()
    assert len(records) == 5  # every member has its record; the links are not read
    read, links = records[:3], records[3:]
    for record in read:
        assert record.data == jpeg and record.path is None and record.error is None
        assert "/" not in record.key and ".." not in record.key and "." not in record.key
    assert [(r.source, r.data, r.error) for r in links] == [
        ("evil.tar::link.jpg", None,
         "not a regular file: a symbolic link to /etc/passwd (not followed)"),
        ("evil.tar::hard.jpg", None,
         "not a regular file: a hard link to ok/normal.jpg (not followed)")]
