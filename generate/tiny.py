"""Tiny random video pipelines, built offline, for tests, benchmarks and `datakit demo`.

Each builder makes a complete diffusers pipeline from tiny configs (two layers, a few
channels) under a fixed seed, with a word-level tokenizer built in code, and saves it with
`save_pretrained` so it loads back through `--model DIR` exactly as a downloaded one would.
The weights are random: the videos they make are noise, useful only to exercise the code.
"""

from __future__ import annotations

import os
from pathlib import Path

from datakit.models.tiny import WORDS, build_tokenizer

FAMILIES = ("wan", "wan-i2v", "wan-v2v", "cogvideox", "cogvideox-i2v", "cogvideox-v2v",
            "cogvideox15", "cogvideox15-v2v", "ltx", "modelscope", "wan22")

def _t5(umt5: bool = False):
    """A tiny T5 encoder (UMT5 for Wan, whose pipeline expects that class)."""
    import transformers

    prefix = "UMT5" if umt5 else "T5"
    config = getattr(transformers, f"{prefix}Config")(
        vocab_size=len(WORDS) + 4, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0,
    )
    return getattr(transformers, f"{prefix}EncoderModel")(config).eval()


def _wan(kind: str) -> dict:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    in_channels = 36 if kind == "i2v" else 16
    return dict(
        transformer=WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
            in_channels=in_channels, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
            num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,
        ),
        vae=AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            temperal_downsample=[False, True, True],
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder=_t5(umt5=True),
        tokenizer=build_tokenizer(512),
    )


def _cogvideox(kind: str, v15: bool = False) -> dict:
    """CogVideoX 1.0, or 1.5 (`v15`: temporal patch 2 and rotary position embeddings)."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXTransformer3DModel,
    )

    latent = 4
    version = dict(num_attention_heads=2, attention_head_dim=16, patch_size_t=2,
                   use_rotary_positional_embeddings=True,
                   use_learned_positional_embeddings=False) if v15 else dict(
        num_attention_heads=4, attention_head_dim=8)
    return dict(
        transformer=CogVideoXTransformer3DModel(
            in_channels=2 * latent if kind == "i2v" else latent, out_channels=latent,
            time_embed_dim=2, text_embed_dim=32, num_layers=2, sample_width=4, sample_height=4,
            sample_frames=9, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16,
            **version,
        ),
        vae=AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8), latent_channels=latent, layers_per_block=1,
            norm_num_groups=2, temporal_compression_ratio=4,
        ),
        scheduler=CogVideoXDDIMScheduler(),
        text_encoder=_t5(),
        tokenizer=build_tokenizer(226),
    )


def _ltx() -> dict:
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXVideoTransformer3DModel,
    )

    return dict(
        transformer=LTXVideoTransformer3DModel(
            in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
            attention_head_dim=8, cross_attention_dim=32, num_layers=2, caption_channels=32,
        ),
        vae=AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4,
            upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1, patch_size_t=1,
            encoder_causal=True, decoder_causal=False,
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_t5(),
        tokenizer=build_tokenizer(128),
    )


def _modelscope() -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    return dict(
        unet=UNet3DConditionModel(
            block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4,
            out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=16,
            attention_head_dim=4, norm_num_groups=2,
        ),
        vae=AutoencoderKL(
            block_out_channels=(8, 8), in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4, sample_size=32, norm_num_groups=2,
        ),
        scheduler=DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, set_alpha_to_one=False,
        ),
        text_encoder=CLIPTextModel(CLIPTextConfig(
            bos_token_id=3, eos_token_id=1, pad_token_id=0, hidden_size=16, intermediate_size=37,
            layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=len(WORDS) + 4, max_position_embeddings=77,
        )).eval(),
        tokenizer=build_tokenizer(77, bos=True),
    )


def build_tiny_pipeline(folder: str | os.PathLike, family: str = "wan", seed: int = 0) -> Path:
    """Build a tiny random pipeline of `family` and save it to `folder`; return the folder.

    Args:
        folder: where `save_pretrained` writes the pipeline (created if missing).
        family: one of `FAMILIES`: `wan`, `cogvideox`, `cogvideox15` (1.5: temporal patch
            2), `ltx`, `modelscope` (text-to-video),
            `wan-i2v`, `cogvideox-i2v` (image-to-video, for `--continue i2v`), `wan-v2v`,
            `cogvideox-v2v`, `cogvideox15-v2v` (video-to-video, for `--refine`), `wan22`
            (Wan 2.2 A14B's layout: a second, low-noise expert `transformer_2` used below
            `boundary_ratio` 0.875 of the training timesteps, as the A14B T2V checkpoint).
        seed: seeds the random weights, so the same call gives the same pipeline.
    """
    import diffusers
    import torch
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    base, _, kind = family.partition("-")
    classes = {
        ("wan", ""): "WanPipeline", ("wan", "i2v"): "WanImageToVideoPipeline",
        ("wan", "v2v"): "WanVideoToVideoPipeline", ("cogvideox", ""): "CogVideoXPipeline",
        ("cogvideox", "i2v"): "CogVideoXImageToVideoPipeline",
        ("cogvideox", "v2v"): "CogVideoXVideoToVideoPipeline", ("ltx", ""): "LTXPipeline",
        ("cogvideox15", ""): "CogVideoXPipeline",
        ("cogvideox15", "v2v"): "CogVideoXVideoToVideoPipeline",
        ("modelscope", ""): "TextToVideoSDPipeline", ("wan22", ""): "WanPipeline",
    }
    torch.manual_seed(seed)
    if base == "wan":
        components = _wan(kind)
    elif base == "wan22":
        components = {**_wan(kind), "transformer_2": _wan(kind)["transformer"],
                      "boundary_ratio": 0.875}
    elif base.startswith("cogvideox"):
        components = _cogvideox(kind, v15=base == "cogvideox15")
    elif base == "ltx":
        components = _ltx()
    else:
        components = _modelscope()
    if classes[base, kind] == "WanImageToVideoPipeline":
        components.update(image_encoder=None, image_processor=None)
    pipeline = getattr(diffusers, classes[base, kind])(**components)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder
