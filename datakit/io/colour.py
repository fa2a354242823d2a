"""HDR video to SDR: what a player on an SDR screen shows, so that key frames, detectors
and re-encoded samples see the picture rather than its washed-out PQ or HLG code values.

The steps are those of FFmpeg's usual recipe (`zscale=t=linear:npl=100, zscale=p=bt709,
tonemap=hable:desat=0, zscale=t=bt709:m=bt709`), done with NumPy and OpenCV because PyAV's
FFmpeg has no zscale: the transfer's inverse (SMPTE ST 2084's EOTF, or ARIB STD-B67's
inverse OETF with its BT.2100 OOTF) to linear light, 1.0 being 100 nits; BT.2020 primaries
to BT.709; Hable's filmic curve on each pixel's largest channel, scaled so the signal's
peak maps to white, the three channels kept in ratio (hue kept); BT.1886's 2.4 gamma to 8
bits.
tests/test_colour.py compares the result with FFmpeg's own filters.
"""

from __future__ import annotations

import functools
import struct

import numpy as np

REFERENCE_WHITE = 100.0  # nits that SDR white stands for (zscale's `npl`, BT.2408's 203 aside)
DEFAULT_PEAK = 1000.0  # nits, when the stream states neither MaxCLL nor its mastering peak
HLG_PEAK = 1000.0  # nits of BT.2100's reference HLG display
TRANSFERS = ("pq", "hlg")
ARIB_STD_B67 = 18  # FFmpeg's AVCOL_TRC_ARIB_STD_B67: HLG
# linear BT.2020 RGB -> linear BT.709 RGB (ITU-R BT.2087)
BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728],
                            [-0.1246, 1.1329, -0.0083],
                            [-0.0182, -0.1006, 1.1187]], np.float32)
BT2020_LUMA = np.array([0.2627, 0.6780, 0.0593])
GAMMA_STEPS = 65535  # display light in [0, 1] quantised this finely before the 2.4 gamma


def pq_to_nits(code: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084's EOTF: non-linear code values in [0, 1] to display light in nits."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    power = np.power(np.clip(code, 0.0, 1.0), 1 / m2)
    return 10000.0 * np.power(np.maximum(power - c1, 0.0) / (c2 - c3 * power), 1 / m1)


def hlg_to_scene(code: np.ndarray) -> np.ndarray:
    """ARIB STD-B67's inverse OETF: code values in [0, 1] to scene light in [0, 1]."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    code = np.clip(code, 0.0, 1.0)
    return np.where(code <= 0.5, code * code / 3, (np.exp((code - c) / a) + b) / 12)


def hable(x: np.ndarray | float) -> np.ndarray | float:
    """John Hable's filmic curve (Uncharted 2), as FFmpeg's tonemap filter has it."""
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    return (x * (a * x + c * b) + d * e) / (x * (a * x + b) + d * f) - e / f


def signal_peak(frame) -> float:
    """The brightest light the stream says it holds, in nits: its content light level
    (MaxCLL), else its mastering display's peak, else DEFAULT_PEAK; HLG is display-relative,
    so HLG_PEAK. `frame` is a decoded PyAV frame."""
    if int(frame.color_trc) == ARIB_STD_B67:
        return HLG_PEAK
    found = {}
    for data in frame.side_data:
        name = str(data.type).rsplit(".", 1)[-1]
        raw = bytes(data)
        if name == "CONTENT_LIGHT_LEVEL" and len(raw) >= 4:
            found["cll"] = struct.unpack_from("=I", raw)[0]
        elif name == "MASTERING_DISPLAY_METADATA" and len(raw) >= 88:
            # AVMasteringDisplayMetadata: 8 rationals of primaries and white point, the
            # minimum and maximum luminance, then has_primaries and has_luminance
            numerator, denominator = struct.unpack_from("=ii", raw, 72)
            has_luminance = struct.unpack_from("=i", raw, 84)[0]
            if has_luminance and denominator > 0:
                found["mastering"] = numerator / denominator
    for key in ("cll", "mastering"):
        if found.get(key, 0) > REFERENCE_WHITE:
            return float(found[key])
    return DEFAULT_PEAK


def tone_map(rgb16: np.ndarray, transfer: str, peak_nits: float,
             bt2020: bool = True) -> np.ndarray:
    """HDR frame to SDR.

    Args:
        rgb16: (H, W, 3) uint16 non-linear RGB (PyAV's `rgb48le`: the stream's matrix
            already undone).
        transfer: "pq" or "hlg".
        peak_nits: the signal's peak (`signal_peak`), mapped to SDR white.
        bt2020: whether the primaries are BT.2020's (converted to BT.709's) or already
            BT.709's.

    Returns:
        (H, W, 3) uint8 BT.709 RGB.
    """
    import cv2

    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {', '.join(TRANSFERS)}, got {transfer!r}")
    # Plane by plane, with OpenCV and lookup tables: NumPy's reductions and broadcasts over a
    # last axis of 3, and OpenCV's pow, took 0.18 s for a 1080p frame, this 0.06-0.075 s
    table = _linear_table(transfer)
    planes = [table[rgb16[..., channel]] for channel in range(3)]
    if transfer == "hlg":
        # BT.2100's OOTF on the luminance, which keeps hue (zimg, and so FFmpeg's zscale,
        # raises each channel to the gamma instead): display light = peak * Y^(gamma-1) * E
        gamma = 1.2 + 0.42 * np.log10(HLG_PEAK / 1000)
        luma = _mix(planes, BT2020_LUMA)
        gain = np.exp(np.log(np.maximum(luma, 1e-6)) * np.float32(gamma - 1))
        gain *= np.float32(HLG_PEAK / REFERENCE_WHITE)
        planes = [cv2.multiply(plane, gain) for plane in planes]
    if bt2020:
        planes = [_mix(planes, row) for row in BT2020_TO_BT709]
    signal = np.maximum(cv2.max(cv2.max(planes[0], planes[1]), planes[2]), np.float32(1e-6))
    peak = np.float32(max(peak_nits / REFERENCE_WHITE, 1.0))
    scale = hable(np.minimum(signal, peak)) / hable(peak) / signal
    encode = _encode_table()
    shown = []
    for plane in planes:
        plane = cv2.multiply(plane, scale, scale=GAMMA_STEPS)
        np.clip(plane, 0, GAMMA_STEPS, out=plane)
        plane += 0.5
        shown.append(encode[plane.astype(np.uint16)])
    return cv2.merge(shown)


def _mix(planes: list[np.ndarray], weights) -> np.ndarray:
    """sum(w * plane), in two OpenCV passes."""
    import cv2

    mixed = cv2.addWeighted(planes[0], float(weights[0]), planes[1], float(weights[1]), 0.0)
    return cv2.scaleAdd(planes[2], float(weights[2]), mixed)


@functools.cache
def _encode_table() -> np.ndarray:
    """BT.1886's EOTF inverted (a 2.4 gamma: the code values an SDR screen shows as that
    light, zscale's `t=bt709` for display light), for light in [0, 1] in GAMMA_STEPS."""
    light = np.arange(GAMMA_STEPS + 1) / GAMMA_STEPS
    return np.round(np.power(light, 1 / 2.4) * 255).astype(np.uint8)


@functools.cache
def _linear_table(transfer: str) -> np.ndarray:
    """Every 16-bit code value's light: PQ in units of REFERENCE_WHITE, HLG as scene light."""
    codes = np.arange(65536, dtype=np.float64) / 65535
    if transfer == "pq":
        return (pq_to_nits(codes) / REFERENCE_WHITE).astype(np.float32)
    return hlg_to_scene(codes).astype(np.float32)

