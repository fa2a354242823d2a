"""Watermark detection on real footage that no bench part, test or tuning round used before
the thirteenth round: videos and photos from Debian packages, fetched once with `apt-get
download` (as `watermark_media` fetches OpenCV's samples). Reported apart from the bench.

Per shot (up to 64 frames, at most 960 px wide): clean, then under each of the bench's 7
marks (`real_marks`), a burned-in timestamp and a subtitle, one at a time: found on the
mark, or flagged elsewhere. Then under 8 marks drawn in faces and with a logo that no bench
mark, test or tuning round used before the fourteenth round (`unseen_marks`: Debian's Lato,
Liberation, Open Sans and WenQuanYi fonts, its swirl logo). Shots that carry an overlay of
their own (an editor's title, a simulation's date) are listed apart. The bench's 20 real
clips with black bars over their top and bottom (or left and right) eighths: flagged or not.
Photos: clean ones flagged, and each under the bench's 7 marks and the 8 unseen ones.

    python bench/watermark_unseen.py [--workers 2]
"""

from __future__ import annotations

import argparse
from collections import Counter
from multiprocessing import get_context

import numpy as np
from watermark import pool_worker
from watermark_marks import Overlay, image_layer, place, real_marks, text_layer
from watermark_media import Asset, debian_member, real_clips
from watermark_real import detect, overlaps

MECAVIDEO = ("python3-mecavideo", "8.0~rc5-1")
FORENSICS = ("forensics-samples-files", "1.1.4-5")
KPHOTOALBUM = ("kphotoalbum", "5.9.1-1")
TRUETYPE = "usr/share/fonts/truetype/"
# faces no bench mark was drawn in, and a logo no bench part used
LATO_LIGHT = (("fonts-lato", "2.0-2.1"), TRUETYPE + "lato/Lato-Light.ttf")
SERIF_ITALIC = (("fonts-liberation2", "2.1.5-1"),
                TRUETYPE + "liberation2/LiberationSerif-Italic.ttf")
SANS = (("fonts-liberation2", "2.1.5-1"), TRUETYPE + "liberation2/LiberationSans-Regular.ttf")
CONDENSED_BOLD = (("fonts-open-sans", "1.11-2"), TRUETYPE + "open-sans/OpenSans-CondBold.ttf")
OPEN_SANS_LIGHT = (("fonts-open-sans", "1.11-2"), TRUETYPE + "open-sans/OpenSans-Light.ttf")
CJK = (("fonts-wqy-microhei", "0.2.0-beta-3.1"), TRUETYPE + "wqy/wqy-microhei.ttc")
SWIRL = (("desktop-base", "12.0.6+nmu1~deb12u1"),
         "usr/share/desktop-base/debian-logos/logo-128.png")


def _asset(package: tuple[str, str], member: str) -> Asset:
    return Asset(*package, member, "/" + member, "debian")


# name: (asset, first frame, frames, has an overlay of its own)
SHOTS = {
    "magnet": (_asset(MECAVIDEO, "usr/share/pymecavideo/data/video/Effet_force_magnetique.ogv"),
               0, 48, False),
    "force": (_asset(MECAVIDEO, "usr/share/pymecavideo/data/video/Force_constante.avi"), 0, 26,
              False),
    "inertia": (_asset(MECAVIDEO, "usr/share/pymecavideo/data/video/Principe_inertie.avi"), 0,
                28, False),
    "balle-a": (_asset(MECAVIDEO, "usr/share/pymecavideo/data/video/balle-jbart.mp4"), 0, 64,
                False),
    "balle-b": (_asset(MECAVIDEO, "usr/share/pymecavideo/data/video/balle-jbart.mp4"), 150, 64,
                False),
    "balle-vp9": (_asset(MECAVIDEO, "usr/share/pymecavideo/data/video/balle1-vp9.avi"), 0, 64,
                  False),
    "g1": (_asset(MECAVIDEO, "usr/share/pymecavideo/data/video/g1.avi"), 0, 16, False),
    "g2": (_asset(MECAVIDEO, "usr/share/pymecavideo/data/video/g2.avi"), 0, 16, False),
    "mars": (_asset(MECAVIDEO, "usr/share/pymecavideo/data/video/retroMars2018.avi"), 0, 25,
             True),
    "calais-a": (_asset(("python-nbsphinx-doc", "0.8.11+ds-1"), "usr/share/doc/python-nbsphinx/"
                        "html/www/wikimediacommons/Shepard_Calais_1906_FrenchGP.ogv"), 0, 64,
                 False),
    "calais-b": (_asset(("python-nbsphinx-doc", "0.8.11+ds-1"), "usr/share/doc/python-nbsphinx/"
                        "html/www/wikimediacommons/Shepard_Calais_1906_FrenchGP.ogv"), 200, 64,
                 False),
    "dog": (_asset(FORENSICS, "usr/share/forensics-samples/original-files/movie1/"
                              "VID_20191220_170832.mp4"), 0, 41, False),
    "hello-a": (_asset(FORENSICS, "usr/share/forensics-samples/original-files/movie2/"
                                  "movie-hello.mp4"), 0, 64, True),
    "hello-b": (_asset(FORENSICS, "usr/share/forensics-samples/original-files/movie2/"
                                  "movie-hello.mp4"), 150, 64, True),
    "birds": (_asset(("wordpress-theme-twentytwentytwo", "6.1.9+dfsg1-0+deb12u1"),
                     "usr/share/wordpress/wp-content/themes/twentytwentytwo/assets/videos/"
                     "birds.mp4"), 0, 31, False),
    "cockatoo-a": (_asset(("python3-imageio", "2.4.1-5"), "usr/lib/python3/dist-packages/"
                          "imageio/resources/images/cockatoo.mp4"), 0, 64, False),
    "cockatoo-b": (_asset(("python3-imageio", "2.4.1-5"), "usr/lib/python3/dist-packages/"
                          "imageio/resources/images/cockatoo.mp4"), 180, 64, False),
    "plant": (_asset(("python3-imageio", "2.4.1-5"), "usr/lib/python3/dist-packages/imageio/"
                     "resources/images/realshort.mp4"), 0, 36, False),
    "diver": (_asset(("pd-extendedview", "0.5~repack-4"),
                     "usr/share/doc/pd-extendedview/media/diver.mov"), 0, 64, False),
    "coin-a": (_asset(("node-opencv", "7.0.0+git20200316.f0a03a4b-1+b3"),
                      "usr/share/doc/node-opencv/examples/files/motion.mov"), 0, 64, False),
    "coin-b": (_asset(("node-opencv", "7.0.0+git20200316.f0a03a4b-1+b3"),
                      "usr/share/doc/node-opencv/examples/files/motion.mov"), 120, 64, False),
    "webcam": (_asset(KPHOTOALBUM, "usr/share/kphotoalbum/demo/movie.avi"), 0, 64, False),
    "openboard": (_asset(("openboard-common", "1.6.4+dfsg-1"),
                         "usr/share/openboard/library/videos/wannaworktogether.mp4"), 1500, 64,
                  False),
}
PHOTOS = [_asset(KPHOTOALBUM, f"usr/share/kphotoalbum/demo/{name}.jpg") for name in (
    "anne_helene", "bar55", "bar55_2", "blackie", "cold_water", "donna", "donna_2",
    "grand_canyon_1", "grand_canyon_2", "grand_canyon_3", "jesper", "jesper_2", "new_wave_1",
    "new_wave_2", "pool", "pool_2", "skagen", "skagen_2", "snow", "spiff", "spiff_2", "sunset",
    "wayne")] + [_asset(FORENSICS, f"usr/share/forensics-samples/original-files/{name}")
                 for name in ("pic1/IMG-20191006-WA0002.jpg", "pic1/IMG_1054.JPG",
                              "pic1/IMG_20200827_231612.jpg", "pic2/IMG_20191224_234846.jpg",
                              "pic2/IMG_20200124_231153.jpg", "pic2/IMG_20200608_111614.jpg")]
WIDEST = 960  # shots and photos are taken at most this wide, as a pipeline would


def shot_frames(name: str) -> np.ndarray:
    """The shot's frames, RGB uint8, at most WIDEST wide (even sizes)."""
    import av
    import cv2

    asset, start, count, _ = SHOTS[name]
    frames = []
    with av.open(str(debian_member(asset))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start + count:
                break
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
    clip = np.stack(frames)
    height, width = clip.shape[1:3]
    if width > WIDEST:
        size = (WIDEST, round(height * WIDEST / width / 2) * 2)
        clip = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in clip])
    return np.ascontiguousarray(clip[:, :clip.shape[1] // 2 * 2, :clip.shape[2] // 2 * 2])


def marks_for(width: int, height: int, seed: list[int]) -> list[Overlay]:
    """The bench's 7 marks, a burned-in timestamp and a subtitle."""
    marks = real_marks(width, height, np.random.default_rng(seed))
    stamp = text_layer("2024-05-01 12:34:56", "DejaVuSansMono", max(11, int(0.045 * height)))
    marks.append(Overlay("timestamp", "timestamp-bottom-right",
                         *place(stamp, width, height, "bottom-right",
                                max(4, int(0.03 * height))), 1.0))
    subtitle = text_layer("and that is where we begin", "DejaVuSans",
                          max(12, int(0.06 * height)), stroke=2)
    marks.append(Overlay("subtitle", "subtitle-bottom-centre",
                         *place(subtitle, width, height, "bottom-centre",
                                max(4, int(0.05 * height))), 1.0))
    return marks


def _file(package_member: tuple[tuple[str, str], str]) -> str:
    return str(debian_member(_asset(*package_member)))


def unseen_marks(width: int, height: int, seed: list[int]) -> list[Overlay]:
    """Eight marks in faces and with a logo no bench part used: a stock site's name in a
    light face, a serif italic credit, a Chinese platform's handle, Debian's swirl logo, a
    large light centre word (as WebVid's), a condensed URL, a Chinese subtitle and a
    channel's handle; opacity 0.3-1.0, in corners, along the bottom or centred."""
    rng = np.random.default_rng(seed)
    margin = max(4, int(0.03 * min(width, height)))
    text_height = max(11, int(height * rng.uniform(0.05, 0.08)))
    corners = ["top-left", "top-right", "bottom-left", "bottom-right"]

    def mark(kind, layer, where, opacity, offset=(0, 0)):
        return Overlay(kind, f"{kind}-{where}-{opacity:g}",
                       *place(layer, width, height, where, margin, offset), opacity)

    stock = str(rng.choice(["Pond5", "Storyblocks", "Dreamstime", "iStock"]))
    return [
        mark("light", text_layer(stock, _file(LATO_LIGHT), text_height), str(rng.choice(corners)),
             0.6),
        mark("serif-italic", text_layer("\u00a9 Getty Images", _file(SERIF_ITALIC), text_height),
             str(rng.choice(corners)), 0.5),
        mark("cjk-handle", text_layer("\u6296\u97f3\u53f7: 88421937", _file(CJK),
                                      max(11, int(height * 0.045)), stroke=1),
             str(rng.choice(["top-left", "bottom-right"])), 0.85, (int(width * 0.02), 0)),
        mark("swirl", image_layer(_file(SWIRL), max(20, int(height * 0.12))),
             str(rng.choice(corners)), 0.6),
        mark("light-centre", text_layer("shutterstock", _file(OPEN_SANS_LIGHT),
                                        int(height * 0.13)), "centre", 0.3),
        mark("condensed-url", text_layer("www.clipcanvas.com", _file(CONDENSED_BOLD),
                                         max(11, int(height * 0.05))), "bottom-centre", 0.7),
        mark("cjk-subtitle", text_layer("\u6211\u4eec\u4ece\u8fd9\u91cc\u5f00\u59cb", _file(CJK),
                                        max(12, int(height * 0.06)), stroke=2),
             "bottom-centre", 1.0),
        mark("handle", text_layer("@channel_name", _file(SANS), text_height),
             str(rng.choice(corners)), 0.4),
    ]


def judge(frames: np.ndarray, marks: list[Overlay]) -> dict:
    """Clean flagged or not, and per mark found on it or flagged elsewhere. `frames`: RGB
    uint8 (T, H, W, 3); a photo is one frame."""
    _, fields, _ = detect(frames)
    return {"flagged": fields["watermark_action"] == "flagged",
            "reason": fields["watermark_reason"], "marks": judge_marks(frames, marks)}


def judge_marks(frames: np.ndarray, marks: list[Overlay]) -> list[dict]:
    """Per mark, put over `frames` alone: found on it, or flagged elsewhere."""
    rows = []
    for mark in marks:
        detection, marked_fields, _ = detect(mark.blend(frames))
        on = overlaps(marked_fields["watermark_box"], mark.mask)
        rows.append({"kind": mark.kind, "on_mark": on,
                     "elsewhere": bool(detection.found) and not on})
    return rows


def shot_task(task: tuple[int, str]) -> dict:
    index, name = task
    frames = shot_frames(name)
    height, width = frames.shape[1:3]
    result = judge(frames, marks_for(width, height, [13, index]))
    unseen = judge_marks(frames, unseen_marks(width, height, [14, index]))
    return {"name": name, "own_overlay": SHOTS[name][3], **result, "unseen_marks": unseen}


def photo_task(task: tuple[int, Asset]) -> dict:
    from PIL import Image

    index, asset = task
    image = Image.open(debian_member(asset)).convert("RGB")
    image.thumbnail((1024, 1024))
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    result = judge(pixels[None], marks_for(width, height, [132, index]))
    unseen = judge_marks(pixels[None], unseen_marks(width, height, [142, index]))
    return {"name": asset.member.rsplit("/", 1)[-1], **result, "unseen_marks": unseen}


def letterbox_task(task: tuple[str, np.ndarray]) -> list[dict]:
    name, clip = task
    rows = []
    for kind in ("letterbox", "pillarbox"):
        boxed = clip.copy()
        if kind == "letterbox":
            bar = clip.shape[1] // 8
            boxed[:, :bar], boxed[:, -bar:] = 0, 0
        else:
            bar = clip.shape[2] // 8
            boxed[:, :, :bar], boxed[:, :, -bar:] = 0, 0
        _, fields, _ = detect(boxed)
        rows.append({"name": f"{name} {kind}", "flagged": fields["watermark_action"] == "flagged",
                     "reason": fields["watermark_reason"]})
    return rows


def summary(rows: list[dict], marks_key: str = "marks") -> str:
    marks = [m for row in rows for m in row[marks_key]]
    total, found = Counter(), Counter()
    for mark in marks:
        total[mark["kind"]] += 1
        found[mark["kind"]] += mark["on_mark"]
    by_kind = ", ".join(f"{kind} {found[kind]}/{total[kind]}" for kind in total)
    return (f"clean flagged {sum(r['flagged'] for r in rows)} of {len(rows)} "
            f"{[r['name'] for r in rows if r['flagged']]}; marks found on the mark "
            f"{sum(m['on_mark'] for m in marks)} of {len(marks)}, flagged elsewhere "
            f"{sum(m['elsewhere'] for m in marks)} ({by_kind})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with get_context("spawn").Pool(args.workers, initializer=pool_worker) as pool:
        shots = pool.map(shot_task, list(enumerate(SHOTS)))
        photos = pool.map(photo_task, list(enumerate(PHOTOS)))
        boxed = [row for rows in pool.map(letterbox_task, [
            (segment.name, clip) for segment, clip, _ in real_clips()]) for row in rows]
    plain = [row for row in shots if not row["own_overlay"]]
    print(f"unseen shots, {len(plain)} without an overlay of their own: {summary(plain)}")
    own = [row for row in shots if row["own_overlay"]]
    print(f"shots with an overlay of their own ({len(own)}): "
          f"{[(r['name'], r['flagged']) for r in own]}")
    print(f"unseen photos ({len(photos)}): {summary(photos)}")
    print(f"unseen marks, on the {len(plain)} shots: {summary(plain, 'unseen_marks')}")
    print(f"unseen marks, on the {len(photos)} photos: {summary(photos, 'unseen_marks')}")
    flagged = [r["name"] for r in boxed if r["flagged"]]
    print(f"bench clips letterboxed or pillarboxed: flagged {len(flagged)} of {len(boxed)} "
          f"{flagged}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("stopped (Ctrl-C): nothing was written; rerun to start again") from None
