"""Measures shared by the watermark bench's sets: PSNR and SSIM inside a mask, flicker, IoU,
and the two baselines a found box is compared with (a Gaussian blur and ffmpeg's `delogo`)."""

from __future__ import annotations

import subprocess

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def masked_psnr(result: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    return psnr(result[:, mask], clean[:, mask])


def masked_ssim(result: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM (skimage, grey) over the mask's box."""
    from skimage.metrics import structural_similarity

    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    values = []
    for r, c in zip(result, clean, strict=True):
        a = r[y0:y1, x0:x1].astype(np.float64).mean(-1)
        b = c[y0:y1, x0:x1].astype(np.float64).mean(-1)
        win = min(7, (min(a.shape) // 2) * 2 - 1)
        values.append(structural_similarity(a, b, data_range=255, win_size=max(3, win)))
    return float(np.mean(values))


def instability(result: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    """Frame-to-frame mean absolute difference inside the mask, minus the clean clip's."""
    def step(frames):
        return float(np.abs(np.diff(frames[:, mask].astype(np.float32), axis=0)).mean())
    return step(result) - step(clean)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def box_mask(box, shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def blur_box(frames: np.ndarray, box) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    out = frames.copy()
    size = max(3, (max(x1 - x0, y1 - y0) // 4) | 1)
    for t in range(len(out)):
        out[t, y0:y1, x0:x1] = cv2.GaussianBlur(out[t, y0:y1, x0:x1], (size, size), 0)
    return out


def delogo(frames: np.ndarray, box) -> np.ndarray:
    """ffmpeg's delogo on the box, through lossless rgb24 raw video (no codec in the way)."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    x0, y0, x1, y1 = box
    # delogo needs the box strictly inside the frame.
    x0, y0 = max(1, x0), max(1, y0)
    x1, y1 = min(width - 2, x1), min(height - 2, y1)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo",
               "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-i", "-",
               "-vf", f"delogo=x={x0}:y={y0}:w={x1 - x0}:h={y1 - y0}",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    result = subprocess.run(command, input=frames.tobytes(), capture_output=True, check=True)
    return np.frombuffer(result.stdout, np.uint8).reshape(frames.shape)


def detection_counts(true_pos: int, marked: int, false_pos: int, clean: int) -> dict:
    """Recall and precision with the counts behind them."""
    return {"marked": marked, "clean": clean, "true_pos": true_pos, "false_pos": false_pos,
            "recall": true_pos / max(1, marked),
            "precision": true_pos / max(1, true_pos + false_pos)}


def counts(s: dict) -> str:
    """Recall, precision and the counts behind them, for one line of the report."""
    return (f"recall {s['recall']:.3f} precision {s['precision']:.3f} ({s['true_pos']}/"
            f"{s['marked']} marked found, {s['false_pos']}/{s['clean']} clean flagged)")
