"""How a chunk holds on to the one before it: when pinned latents are released, VidRD's reuse
noise, and the colour-drift correction against the first chunk.

Pinning. Before step i a pinned latent is overwritten with `a_i * clean + b_i * noise`
(`families.noise_level`: x = a * clean + b * noise, a = 1 - sigma on flow matching,
sqrt(alpha_bar) on DDIM/DPM). `anchor` releases its latents by noise level: each stays pinned
while the state's signal fraction a_i is below `ANCHOR_RELEASE` (0.9), so the new frames are
denoised against a nearly clean anchor to the end, as SkyReels-V2's diffusion forcing keeps
its prefix clean and LTX's long pipeline blends its conditioning in at every step. A step
count (`--anchor-steps`, `--reuse-guidance`) releases at whatever noise level that step has on
the family's schedule; with 50 steps and beta 0.4 the latent next to the new frames was let go
at a = 0.18 on Wan (shift 3), 0.07 on LTX-Video and 0.21 on CogVideoX-2b (docs/generate.md has
the table), almost pure noise, and the re-rendered tail then drifted from the real one.

Colour drift. `match_colour` is AdaIN on the latents, as diffusers' LTX long pipeline does
between its windows: each channel's mean and standard deviation over the chunk are moved a
`factor` of the way to the first chunk's.
"""

from __future__ import annotations

import math

ANCHOR_RELEASE = 0.9
COLOUR_CORRECTION = 0.25


def pinned_steps(overlap: int, steps: int, beta: float) -> list[int]:
    """How many first steps overlap frame m = 0..O-1 is pinned: the i with i < (O-m)*(T/O)*beta."""
    return [min(steps, math.ceil((overlap - m) * steps / overlap * beta - 1e-9))
            for m in range(overlap)]


def release_index(signal: list[float], release: float) -> int:
    """Steps a latent released at signal fraction `release` is pinned: the first index i whose
    state has a_i >= `release` (within float32 rounding: LTX's schedule ends at a = 0.9 read
    as 0.89999998), `len(signal)`, every step, when none has."""
    return next((i for i, a in enumerate(signal) if a >= release - 1e-6), len(signal))


def released_at(signal: list[float], pins: list[int]) -> list[float]:
    """The signal fraction of the state each latent is released at (1.0: pinned to the end)."""
    return [round(signal[p], 4) if p < len(signal) else 1.0 for p in pins]


def anchor_pins(latents: int, signal: list[float], release: float | None, beta: float,
                full_signal: list[float] | None = None) -> list[int]:
    """Steps each anchor latent 0..L-1 is pinned on a schedule with signal fractions `signal`.

    Args:
        latents: L, the anchor latents.
        signal: a_i before each step i of this run (`families.planned_signal`).
        release: pin every anchor latent until a_i reaches it; None: by step count.
        beta: step count: VidRD's staging (`pinned_steps`), the latent next to the new frames
            pinned longest (`--anchor-steps N` is beta = N / steps).
        full_signal: step count on a shorter schedule (a search preview): the full run's
            signal fractions; each latent is then released at the noise level where the full
            run releases it, so the preview is conditioned as the full run is.
    """
    if release is not None:
        return [release_index(signal, release)] * latents
    if full_signal is None:
        return pinned_steps(latents, len(signal), beta)[::-1]
    full = pinned_steps(latents, len(full_signal), beta)[::-1]
    return [release_index(signal, full_signal[p]) if p < len(full_signal) else len(signal)
            for p in full]


def reuse_noise(previous_initial, fresh, overlap: int, alpha: float):
    """VidRD's initial noise: reversed past noise for the overlap, past-dependent for the rest."""
    past = previous_initial.flip(2)
    noise = fresh.clone()
    noise[:, :, :overlap] = past[:, :, :overlap]
    mix = past[:, :, overlap:] * (alpha / math.sqrt(1 + alpha**2))
    noise[:, :, overlap:] = mix + fresh[:, :, overlap:] / math.sqrt(1 + alpha**2)
    return noise


def channel_stats(latents):
    """Per-channel mean and standard deviation of canonical (B, C, F, H, W) latents."""
    return (latents.mean(dim=(2, 3, 4), keepdim=True),
            latents.std(dim=(2, 3, 4), keepdim=True))


def match_colour(latents, reference: tuple, factor: float):
    """AdaIN: move each channel's mean and std of `latents` a `factor` of the way to
    `reference` (`channel_stats` of the first chunk); 0 returns `latents` unchanged."""
    if factor <= 0:
        return latents
    mean, std = channel_stats(latents)
    ref_mean, ref_std = (x.to(latents) for x in reference)
    target_mean = (1 - factor) * mean + factor * ref_mean
    target_std = ((1 - factor) * std + factor * ref_std).clamp(min=1e-6)
    return (latents - mean) / (std + 1e-6) * target_std + target_mean
