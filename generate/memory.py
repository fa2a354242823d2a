"""A pre-run estimate of peak GPU memory: the weights that stay resident plus activations; and
keeping host memory flat over chunks (`bound_heap_growth`, at the end).

Printed before the first chunk and written to each sample's json (`memory_estimate`), so a run
that will not fit is known before it starts rather than after the text encoder and the first
chunk's previews.

Weights (exact for what is loaded): the bytes of every parameter and buffer of the pipeline's
models, each tensor counted once (refinement shares the t2v models, `share_backbone`), at
the dtype it was loaded in (Wan's VAE in float32), resident as the offload mode keeps them:
- `none`: every model of every pipeline the run loaded;
- `model`: the largest single model (one model is on the GPU at a time);
- `sequential`: the largest leaf module (one layer at a time);
- `group` (leaf_level with a stream): twice the largest leaf module (one computing, the next
  one being copied).

Activations (an order of magnitude, documented in docs/generate.md with its limits): the
larger of the denoiser's and the VAE decoder's, since one runs after the other:
- transformer: `batch * tokens * (ffn + 4 * hidden) * bytes`, tokens = latent frames / temporal
  patch * (latent height / patch) * (latent width / patch) of one chunk, hidden = heads *
  head dim, ffn = the config's `ffn_dim` or 4 * hidden; batch 2 where the pipeline stacks the
  conditional and unconditional passes (CogVideoX, LTX, ModelScope with CFG), 1 for Wan (it
  runs them one after the other). Attention itself is counted as memory-efficient (no
  tokens^2 matrix), which holds for PyTorch's SDPA and the flash/sage backends.
- ModelScope's UNet: the same with tokens = frames * latent height * latent width and
  width = 12 * the first block's channels.
- VAE decode: `frames decoded at once * height * width * channels at full resolution * 4 *
  bytes` (four feature maps of the last stage alive at once); height and width are the tile's
  with `--vae-tiling`; frames at once: Wan 4 (its causal decoder works one latent at a time),
  CogVideoX 8 (two latents per batch), LTX and ModelScope the whole chunk (ModelScope: one
  frame with `--vae-slicing`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

GIB = 2**30


def _tensors(module) -> list:
    return [*module.parameters(), *module.buffers()]


def _bytes(tensors, seen: set[int]) -> int:
    total = 0
    for tensor in tensors:  # meta tensors (sequential offload's) have a size, no data
        key = tensor.data_ptr() or id(tensor)
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def _models(backbones) -> list:
    """The torch modules of the pipelines, each once (shared components are one object)."""
    import torch

    models, ids = [], set()
    for backbone in backbones:
        for component in backbone.pipe.components.values():
            if isinstance(component, torch.nn.Module) and id(component) not in ids:
                ids.add(id(component))
                models.append(component)
    return models


def resident_weight_bytes(backbones, offload: str = "none") -> int:
    """Bytes of weights on the GPU at the peak under `offload` (see the module docstring)."""
    models = _models(backbones)
    if offload == "none":
        seen: set[int] = set()
        return sum(_bytes(_tensors(model), seen) for model in models)
    if offload == "model":
        return max((_bytes(_tensors(model), set()) for model in models), default=0)
    leaves = [m for model in models for m in model.modules() if not list(m.children())]
    largest = max((_bytes([*m.parameters(recurse=False), *m.buffers(recurse=False)], set())
                   for m in leaves), default=0)
    return largest if offload == "sequential" else 2 * largest


def activation_bytes(backbone, frames: int, height: int, width: int, cfg: bool) -> dict:
    """The denoiser's and the VAE decoder's activation estimates for one chunk, in bytes."""
    from generate.loading import denoiser_of

    pipe, family = backbone.pipe, backbone.family.name
    denoiser = denoiser_of(pipe)
    config = denoiser.config
    element = denoiser.dtype.itemsize
    _, _, latent_frames, latent_height, latent_width = backbone.noise_shape(frames, height, width)
    batch = 2 if cfg and family != "wan" else 1
    if family == "modelscope":
        tokens = latent_frames * latent_height * latent_width
        per_token = 12 * config.block_out_channels[0]
    else:
        patch, patch_t = config.patch_size, getattr(config, "patch_size_t", None) or 1
        if isinstance(patch, (list, tuple)):  # Wan: (t, h, w)
            patch_t, patch = patch[0], patch[1]
        tokens = -(-latent_frames // patch_t) * (latent_height // patch) * (latent_width // patch)
        hidden = config.num_attention_heads * config.attention_head_dim
        per_token = (getattr(config, "ffn_dim", None) or 4 * hidden) + 4 * hidden
    denoise = batch * tokens * per_token * element

    vae = pipe.vae
    vae_config = vae.config
    if family == "wan":
        channels = vae_config.base_dim
    else:
        channels = (getattr(vae_config, "decoder_block_out_channels", None)
                    or vae_config.block_out_channels)[0]
    at_once = {"wan": backbone.temporal, "cogvideox": 2 * backbone.temporal}.get(family, frames)
    if family == "modelscope" and getattr(vae, "use_slicing", False):
        at_once = 1
    tile_h, tile_w = height, width
    if getattr(vae, "use_tiling", False):
        tile_h = min(height, getattr(vae, "tile_sample_min_height", height))
        tile_w = min(width, getattr(vae, "tile_sample_min_width", width))
    decode = min(at_once, frames) * tile_h * tile_w * channels * 4 * vae.dtype.itemsize
    return {"denoise": denoise, "decode": decode}


def size(count: int) -> str:
    """Bytes as GiB (MiB below 0.1 GiB, so tiny test models do not all read 0.0)."""
    return f"{count / GIB:.1f} GiB" if count >= GIB // 10 else f"{count / 2**20:.1f} MiB"


def estimate_peak(backbones, offload: str, frames: int, height: int, width: int,
                  guidance: float) -> dict[str, Any]:
    """Weights resident, activations and their sum, in bytes, for one chunk of the run.

    Args:
        backbones: every backbone the run loaded (t2v first; i2v, v2v), shared ones once.
        offload: `none`, `model`, `sequential` or `group`.
        frames, height, width: one chunk's size in pixels.
        guidance: the CFG scale (above 1: two passes per step).
    """
    weights = resident_weight_bytes(backbones, offload)
    activations = activation_bytes(backbones[0], frames, height, width, guidance > 1)
    peak = max(activations.values())
    return {"peak_bytes": weights + peak, "weights_bytes": weights, "activations_bytes": peak,
            "denoise_activations_bytes": activations["denoise"],
            "decode_activations_bytes": activations["decode"], "offload": offload}


def describe(estimate: dict, device: str) -> str:
    """The one line printed before the first chunk."""
    where = "GPU" if device.startswith("cuda") else device
    return (f"estimated peak {where} memory: {size(estimate['peak_bytes'])} (weights "
            f"{size(estimate['weights_bytes'])} resident with --offload {estimate['offload']}, "
            f"activations ~{size(estimate['activations_bytes'])})")


# -- host memory over chunks ------------------------------------------------------------------

M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has `malloc_trim`), else None (macOS, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - raise AttributeError where missing
    except (OSError, AttributeError):
        return None
    return libc


def bound_heap_growth() -> None:
    """Keep host memory flat over chunks: without this glibc's peak RSS creeps up by 10-25%
    over 16 chunks on the benchmark although nothing is kept from one chunk to the next.

    glibc serves blocks below a threshold that it raises as large blocks are freed (up to
    32 MiB) from heaps ("arenas", one per allocating thread), and keeps what is freed there;
    the next chunk's tensors do not fit the same holes. Tensors of 1 MiB or more are therefore
    always given their own pages and returned when freed, one arena serves every thread, and
    the heap is trimmed between denoising and decoding and after each chunk
    (`release_freed_memory`). This costs time only where the model runs on the CPU (fresh
    pages for every large tensor: about 25% there); `--fast-heap` leaves glibc as it is.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """Hand the memory a finished chunk freed back to the OS (see `bound_heap_growth`)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
