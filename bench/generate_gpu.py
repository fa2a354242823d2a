"""Chunked against one-pass generation on full-size architectures with random weights (GPU).

Real weights cannot be downloaded on any machine here, so each backbone is built from its
published configs (the dimensions below, with where they come from) with random weights:
the same layers, shapes and dtypes cost the same time and memory as trained ones. For each
model, at 480x832 with 81-frame chunks (`--continue anchor`, overlap t + 1: each later chunk
adds 76 frames on Wan and CogVideoX, 72 on LTX) and 2 denoising steps per chunk: the peak GPU
memory
(`torch.cuda.max_memory_allocated`) after 1, 4 and 16 chunks (one 16-chunk run read after each
chunk's decode: the first n chunks of it are an n-chunk run), seconds per denoising step, and
the same pipeline generating each length in one pass (one chunk as long as the video), for
the lengths whose one pass is predicted to fit the time left (a CUDA out-of-memory is
recorded as such). The whole run keeps to `--budget` seconds: models run cheapest first and
each gets an even share of what is left; what a model did not reach is printed as not run.

Seconds per step: the second step of each chunk (the first also sets the chunk up), median
over chunks. `--tiny` runs the same code on tiny configs on the CPU (32x32, 17-frame chunks),
so the script is known to work without a GPU.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from pathlib import Path

T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, relative_attention_max_distance=128,
              feed_forward_proj="gated-gelu", dropout_rate=0.0)
# Wan-AI/Wan2.1-T2V-*-Diffusers: transformer configs as in diffusers'
# scripts/convert_wan_to_diffusers.py; text encoder UMT5-XXL (google/umt5-xxl); VAE =
# AutoencoderKLWan's defaults (base_dim 96, z_dim 16); UniPC, flow prediction, flow_shift 3.0
WAN_TRANSFORMER = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16,
                       out_channels=16, text_dim=4096, freq_dim=256, cross_attn_norm=True,
                       qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
WAN_COMMON = dict(family="wan", text_encoder=dict(T5_XXL, vocab_size=256384), vae={},
                  scheduler=("UniPCMultistepScheduler",
                             dict(prediction_type="flow_prediction", use_flow_sigmas=True,
                                  flow_shift=3.0)),
                  guidance=5.0)
MODELS = {
    # LTX-Video 0.9.0 (2B): LTXVideoTransformer3DModel's defaults (28 layers, 32 heads x 64),
    # the 0.9.0 VAE of diffusers' scripts/convert_ltx_to_diffusers.py (AutoencoderKLLTXVideo's
    # defaults), T5-v1.1-XXL, FlowMatchEuler with dynamic shift (that script's scheduler)
    "ltx-2b": dict(family="ltx", transformer={}, text_encoder=dict(T5_XXL, vocab_size=32128),
                   vae={}, scheduler=("FlowMatchEulerDiscreteScheduler",
                                      dict(use_dynamic_shifting=True, base_shift=0.95,
                                           max_shift=2.05, base_image_seq_len=1024,
                                           max_image_seq_len=4096, shift_terminal=0.1)),
                   guidance=3.0),
    "wan-1.3b": dict(WAN_COMMON, transformer=dict(WAN_TRANSFORMER, num_attention_heads=12,
                                                  ffn_dim=8960, num_layers=30)),
    # THUDM/CogVideoX-5b: 42 layers, 48 heads x 64, rotary embeddings, VAE scaling 0.7
    # (scripts/convert_cogvideox_to_diffusers.py); v-prediction zero-SNR DDIM, snr_shift 1.0
    "cogvideox-5b": dict(family="cogvideox",
                         transformer=dict(num_attention_heads=48, attention_head_dim=64,
                                          num_layers=42, use_rotary_positional_embeddings=True),
                         text_encoder=dict(T5_XXL, vocab_size=32128),
                         vae=dict(scaling_factor=0.7),
                         scheduler=("CogVideoXDDIMScheduler",
                                    dict(snr_shift_scale=1.0, beta_end=0.012,
                                         beta_schedule="scaled_linear", beta_start=0.00085,
                                         clip_sample=False, prediction_type="v_prediction",
                                         rescale_betas_zero_snr=True, set_alpha_to_one=True,
                                         timestep_spacing="trailing")),
                         guidance=6.0),
    "wan-14b": dict(WAN_COMMON, transformer=dict(WAN_TRANSFORMER, num_attention_heads=40,
                                                 ffn_dim=13824, num_layers=40)),
}
TINY_T5 = dict(vocab_size=200, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8, dropout_rate=0.0)
TINY = {  # the same builders on dimensions a CPU runs in seconds
    "ltx-2b": dict(transformer=dict(in_channels=8, out_channels=8, num_attention_heads=4,
                                    attention_head_dim=8, cross_attention_dim=32, num_layers=2,
                                    caption_channels=32),
                   vae=dict(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                            decoder_block_out_channels=(8, 8, 8, 8),
                            layers_per_block=(1, 1, 1, 1, 1),
                            decoder_layers_per_block=(1, 1, 1, 1, 1),
                            spatio_temporal_scaling=(True, True, False, False),
                            decoder_spatio_temporal_scaling=(True, True, False, False),
                            patch_size=1)),
    "wan-1.3b": dict(transformer=dict(WAN_TRANSFORMER, num_attention_heads=2,
                                      attention_head_dim=12, text_dim=32, ffn_dim=32,
                                      num_layers=2),
                     vae=dict(base_dim=3, dim_mult=[1, 1, 1, 1], num_res_blocks=1)),
    "cogvideox-5b": dict(transformer=dict(num_attention_heads=2, attention_head_dim=16,
                                          in_channels=4, out_channels=4, time_embed_dim=2,
                                          text_embed_dim=32, num_layers=2, sample_width=4,
                                          sample_height=4, sample_frames=9,
                                          max_text_seq_length=16,
                                          use_rotary_positional_embeddings=True),
                         vae=dict(block_out_channels=(8, 8, 8, 8), latent_channels=4,
                                  layers_per_block=1, norm_num_groups=2)),
    "wan-14b": dict(transformer=dict(WAN_TRANSFORMER, num_attention_heads=2,
                                     attention_head_dim=12, text_dim=32, ffn_dim=32,
                                     num_layers=3),
                    vae=dict(base_dim=3, dim_mult=[1, 1, 1, 1], num_res_blocks=1)),
}
CLASSES = {  # pipeline, transformer, VAE, text encoder
    "wan": ("WanPipeline", "WanTransformer3DModel", "AutoencoderKLWan", "UMT5"),
    "cogvideox": ("CogVideoXPipeline", "CogVideoXTransformer3DModel", "AutoencoderKLCogVideoX",
                  "T5"),
    "ltx": ("LTXPipeline", "LTXVideoTransformer3DModel", "AutoencoderKLLTXVideo", "T5"),
}


class OutOfTime(Exception):
    """The model's share of the time budget ran out during a run."""


def cast(model, dtype):
    """`model` in `dtype` but for the modules its class keeps in float32
    (`_keep_in_fp32_modules`), as `from_pretrained(torch_dtype=...)` loads it."""
    import torch

    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, parameter in model.named_parameters():
        wanted = torch.float32 if keep & set(name.split(".")) else dtype
        parameter.data = parameter.data.to(wanted)
    return model.eval()


def random_backbone(name: str, device: str, tiny: bool = False):
    """A `Backbone` over `name`'s pipeline with random weights, built on `device`: bfloat16 on
    CUDA (Wan's VAE float32, as `load_backbone` keeps it), float32 on the CPU."""
    import diffusers
    import torch
    import transformers

    from datakit.models.tiny import build_tokenizer
    from generate.backbone import Backbone
    from generate.families import FAMILIES

    spec = {**MODELS[name], **(TINY[name] if tiny else {})}
    if tiny:
        spec["text_encoder"] = TINY_T5
    family = spec["family"]
    pipeline, transformer_class, vae_class, encoder = CLASSES[family]
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):  # (built in float32, then cast: one model at a time)
        transformer = cast(getattr(diffusers, transformer_class)(**spec["transformer"]), dtype)
        config = getattr(transformers, f"{encoder}Config")(**spec["text_encoder"])
        text_encoder = cast(getattr(transformers, f"{encoder}EncoderModel")(config), dtype)
        vae = getattr(diffusers, vae_class)(**spec["vae"]).eval()
        vae = vae if family == "wan" else cast(vae, dtype)
    scheduler_class, scheduler_config = spec["scheduler"]
    scheduler = getattr(diffusers, scheduler_class)(**scheduler_config)
    tokens = {"wan": 512, "cogvideox": 226, "ltx": 128}[family]
    pipe = getattr(diffusers, pipeline)(tokenizer=build_tokenizer(tokens),
                                        text_encoder=text_encoder, transformer=transformer,
                                        vae=vae, scheduler=scheduler)
    backbone = Backbone(pipe, FAMILIES[family], "t2v", f"random {name}")
    return backbone, spec["guidance"]


def generate_once(backbone, guidance: float, frames: int, chunk: int, size: tuple[int, int],
                  deadline: float) -> dict:
    """One video of `frames` frames in chunks of `chunk` frames, 2 steps each: the peak GPU
    memory after each chunk's decode (GiB) and the seconds of each chunk's second step.
    Raises `OutOfTime` with both after the first decode past `deadline`."""
    import torch

    from generate.chunked import ChunkedGenerator, ChunkSettings
    from generate.prompts import Story

    cuda = backbone.device.startswith("cuda")
    figures: dict[str, list] = {"peaks_gib": [], "step_seconds": []}
    stepped: list[float] = []
    decode = backbone.decode

    def decode_and_read(latents):
        frames_out = decode(latents)
        figures["peaks_gib"].append(round(torch.cuda.max_memory_allocated() / 2**30, 2)
                                    if cuda else None)
        if time.perf_counter() > deadline:
            raise OutOfTime(figures)
        return frames_out

    def step_done(_count: int) -> None:
        if cuda:
            torch.cuda.synchronize()
        stepped.append(time.perf_counter())
        if len(stepped) % 2 == 0:
            figures["step_seconds"].append(round(stepped[-1] - stepped[-2], 3))

    backbone.decode = decode_and_read
    settings = ChunkSettings(frames=frames, chunk_frames=chunk, overlap=backbone.temporal + 1,
                             continue_mode="anchor", steps=2, guidance=guidance,
                             height=size[0], width=size[1], fps=16, search_k=1)
    generator = ChunkedGenerator(backbone, settings, progress=step_done)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        with tempfile.TemporaryDirectory() as out:
            generator(Story("bench", ("a boat on the sea",), None, "bench"), 0,
                      Path(out) / "b.mp4", Path(out) / "state")
    finally:
        del backbone.decode
    return figures


def median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def bench_model(name: str, device: str, counts: tuple[int, ...], budget: float,
                tiny: bool) -> dict:
    """Chunked (one run of max(counts) chunks) then one pass per length, within `budget` s."""
    import torch

    started = time.perf_counter()
    deadline = started + budget
    size, chunk = ((32, 32), 17) if tiny else ((480, 832), 81)
    backbone, guidance = random_backbone(name, device, tiny)
    cuda = device.startswith("cuda")
    row: dict = {"model": name, "size": list(size), "chunk_frames": chunk,
                 "build_seconds": round(time.perf_counter() - started, 1),
                 "weights_gib": round(torch.cuda.memory_allocated() / 2**30, 2) if cuda else None}
    added = chunk - backbone.temporal - 1  # frames each chunk after the first adds
    length = lambda n: chunk + (n - 1) * added  # noqa: E731
    try:
        chunked = generate_once(backbone, guidance, length(max(counts)), chunk, size, deadline)
    except OutOfTime as stopped:
        chunked = {**stopped.args[0], "stopped": "out of time"}
    peaks, step = chunked["peaks_gib"], median(chunked["step_seconds"])
    row["chunked"] = {"frames": {n: length(n) for n in counts}, "step_seconds": step,
                      "peak_gib": {n: peaks[n - 1] if n <= len(peaks) else "not run"
                                   for n in counts}, "stopped": chunked.get("stopped")}
    row["one_pass"] = {}
    for n in counts[1:]:
        frames = length(n)
        one = next(k for k in range(frames, frames + 64) if backbone.writable(k))
        # attention grows with the square of the tokens: a bound on one pass's time
        predicted = None if step is None else 2 * step * (one / chunk) ** 2
        left = deadline - time.perf_counter()
        if predicted is None or predicted > left:
            row["one_pass"][n] = ("not run: no step time" if predicted is None else
                                  f"not run: 2 steps predicted {predicted:.0f} s, {left:.0f} s "
                                  "left")
            continue
        try:
            result = generate_once(backbone, guidance, frames, one, size, float("inf"))
            row["one_pass"][n] = {"frames": frames, "chunk_frames": one,
                                  "peak_gib": result["peaks_gib"][0],
                                  "step_seconds": median(result["step_seconds"])}
        except torch.cuda.OutOfMemoryError:
            gc.collect()
            torch.cuda.empty_cache()
            row["one_pass"][n] = {"frames": frames, "chunk_frames": one,
                                  "peak_gib": "out of memory"}
    row["seconds"] = round(time.perf_counter() - started, 1)
    del backbone
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


def bench_gpu(models: list[str], counts: tuple[int, ...], budget: float, tiny: bool) -> list:
    import torch

    if not tiny and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (--tiny runs the same code on the CPU)")
    device = "cpu" if tiny else "cuda"
    started = time.perf_counter()
    rows = []
    for index, name in enumerate(models):
        share = (budget - (time.perf_counter() - started)) / (len(models) - index)
        row = bench_model(name, device, counts, share, tiny)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows
