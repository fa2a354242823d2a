"""Memory and speed on one GPU (issue 9 §3): prompt embeddings computed once per video, offload
choices, the pre-run GPU memory estimate, the attention backend, LoRA, anchor steps, compile.

What needs a GPU (offload, the real peak) is tested here through the calls it makes, with
spies; everything else runs for real on the tiny random pipelines.
"""

import pytest
import torch

from generate.backbone import Backbone
from generate.chunked import ChunkedGenerator, ChunkSettings
from generate.loading import load_backbone
from generate.prompts import Story
from generate.search import ContinuityScorer
from generate.tiny import build_tiny_pipeline

FAMILIES = ("wan", "cogvideox", "ltx", "modelscope")


def chunked(backbone, frames=27, chunk=9, **extra) -> ChunkedGenerator:
    settings = ChunkSettings(**{**dict(
        frames=frames, chunk_frames=chunk, continue_mode="none", steps=2, guidance=3.0,
        negative_prompt="night", height=32, width=32, search_k=2, search_steps=1), **extra})
    return ChunkedGenerator(backbone, settings, scorer=ContinuityScorer())


STORY = Story("s", ("a cat running", "a dog in the sea"), None, "test")  # chunks: A, B, B
ONE = Story("one", ("a cat running",), None, "test")


# -- 1. each distinct text encoded once per video ---------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_each_text_is_encoded_once_per_video(tiny, tmp_path, family):
    backbone = load_backbone(str(tiny(family)))
    pipe = backbone.pipe
    seen: list[str] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(pipe.tokenizer.decode(ids[0], skip_special_tokens=True).strip())

    pipe.text_encoder.register_forward_pre_hook(hook, with_kwargs=True)
    generator = chunked(backbone)
    runs = []
    original = type(pipe).__call__
    type_call = lambda self, *a, **k: runs.append(k) or original(self, *a, **k)  # noqa: E731
    pipe.__class__ = type("Spied", (type(pipe),), {"__call__": type_call})
    generator(STORY, 1, tmp_path / "a.mp4", tmp_path / "st")
    # 3 chunks, 2 previews + 1 full run for each after the first: 7 pipeline calls, none
    # given text (encoding in each would run the text encoder 14 times)
    assert len(runs) == 7 and all(k.get("prompt") is None for k in runs)
    assert sorted(seen) == ["a cat running", "a dog in the sea", "night"]
    if family == "ltx":
        assert all(k["prompt_attention_mask"] is not None for k in runs)
        assert all(k["negative_prompt_attention_mask"] is not None for k in runs)
    # a second video encodes again (the cache lives one video), the same three texts
    generator(STORY, 2, tmp_path / "b.mp4", tmp_path / "st2")
    assert sorted(seen[3:]) == ["a cat running", "a dog in the sea", "night"]


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_embeddings_give_the_same_latents(tiny, tmp_path, monkeypatch, family):
    """Against the pipeline encoding its own text on every call (the code before the cache)."""
    backbone = load_backbone(str(tiny(family)))
    generator = chunked(backbone, frames=18)
    generator(STORY, 5, tmp_path / "a.mp4", tmp_path / "cached")
    with monkeypatch.context() as patch:
        patch.setattr(Backbone, "prompt_embeds", lambda self, prompt, negative, guidance,
                      pipe=None: {"prompt": prompt, "negative_prompt": negative or None})
        generator(STORY, 5, tmp_path / "b.mp4", tmp_path / "every")
    for chunk in range(2):
        cached = generator._load(tmp_path / "cached", chunk)[0]["latents"]
        every = generator._load(tmp_path / "every", chunk)[0]["latents"]
        assert torch.equal(cached, every), chunk
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


# -- 2. offload choices -----------------------------------------------------------------------

def spy_placement(monkeypatch) -> list[tuple[str, dict]]:
    """Record the placement calls a pipeline gets (they need a GPU, so they only record)."""
    from diffusers import DiffusionPipeline

    calls: list[tuple[str, dict]] = []
    for name in ("enable_model_cpu_offload", "enable_sequential_cpu_offload",
                 "enable_group_offload", "to"):
        def record(self, *args, _name=name, **kwargs):
            calls.append((_name, {**kwargs, "args": args}))
            return self

        monkeypatch.setattr(DiffusionPipeline, name, record)
    monkeypatch.setattr("generate.loading.resolve_device", lambda device: device)
    return calls


@pytest.mark.parametrize(("offload", "cpu_offload", "method", "expected"), [
    ("none", False, "to", {"args": ("cuda",)}),
    ("model", False, "enable_model_cpu_offload", {"device": "cuda", "args": ()}),
    ("none", True, "enable_model_cpu_offload", {"device": "cuda", "args": ()}),
    ("sequential", False, "enable_sequential_cpu_offload", {"device": "cuda", "args": ()}),
    ("group", False, "enable_group_offload", {
        "onload_device": torch.device("cuda"), "offload_device": torch.device("cpu"),
        "offload_type": "leaf_level", "use_stream": True, "args": ()}),
])
def test_offload_makes_the_diffusers_call(tiny, monkeypatch, offload, cpu_offload, method,
                                          expected):
    calls = spy_placement(monkeypatch)
    backbone = load_backbone(str(tiny("wan")), device="cuda", dtype="float32", offload=offload,
                             cpu_offload=cpu_offload)
    assert calls == [(method, expected)]
    assert backbone.offload == ("model" if cpu_offload else offload)


def test_group_offload_really_runs_on_cpu(tiny, tmp_path):
    """Group offloading's hooks (onload and offload both on the CPU here, no stream) give the
    same latents as no offloading: what of it can run without a GPU."""
    from diffusers.hooks.group_offloading import _get_group_onload_device

    from generate.loading import apply_offload

    plain = load_backbone(str(tiny("wan")))
    grouped = load_backbone(str(tiny("wan")))
    apply_offload(grouped.pipe, "group", "cpu")
    assert _get_group_onload_device(grouped.pipe.transformer) == torch.device("cpu")
    latents = []
    for backbone, name in ((plain, "plain"), (grouped, "group")):
        generator = chunked(backbone, frames=9, search_k=1)
        generator(ONE, 1, tmp_path / f"{name}.mp4", tmp_path / name)
        latents.append(generator._load(tmp_path / name, 0)[0]["latents"])
    assert torch.equal(latents[0], latents[1])


@pytest.mark.parametrize("args", [["--offload", "group"], ["--offload", "sequential"],
                                  ["--cpu-offload"], ["--cpu-offload", "--offload", "group"],
                                  ["--offload", "disk"]])
def test_offload_needs_cuda_in_one_line(tiny, tmp_path, args):
    result = cli(tiny, tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert "offload" in result.output.splitlines()[-1]
    assert "Traceback" not in result.output


def cli(tiny, tmp_path, *extra, family="wan"):
    from typer.testing import CliRunner

    from datakit.cli import app

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat running\n")
    return CliRunner().invoke(app, [
        "generate", "--prompts", str(prompts), "--model", str(tiny(family)), "--out",
        str(tmp_path / "out"), "--steps", "2", "--height", "32", "--width", "32",
        "--frames", "9", "--chunk-frames", "9", "--no-checks", "--search-k", "1", *extra])


# -- 3. the pre-run memory estimate -----------------------------------------------------------

def test_memory_estimate_weights_count_what_is_resident(tiny, tmp_path):
    from generate.loading import share_backbone
    from generate.memory import estimate_peak

    backbone = load_backbone(str(tiny("wan")), dtype="bfloat16")  # Wan's VAE stays float32
    pipe = backbone.pipe
    per_model = {name: sum(t.numel() * t.element_size() for module in [getattr(pipe, name)]
                           for t in [*module.parameters(), *module.buffers()])
                 for name in ("text_encoder", "transformer", "vae")}
    # the dtype counts: the transformer's weights in bfloat16, the VAE's in float32
    params = list(pipe.transformer.parameters())
    assert sum(p.numel() * p.element_size() for p in params) < 3 * sum(p.numel() for p in params)
    assert per_model["vae"] >= 4 * sum(p.numel() for p in pipe.vae.parameters())
    estimate = estimate_peak([backbone], "none", 9, 32, 32, 3.0)
    assert estimate["weights_bytes"] == sum(per_model.values())
    assert estimate_peak([backbone], "model", 9, 32, 32, 3.0)["weights_bytes"] == \
        max(per_model.values())
    # refinement shares the t2v models: nothing counted twice
    shared = share_backbone(backbone, "v2v")
    assert estimate_peak([backbone, shared], "none", 9, 32, 32, 3.0)["weights_bytes"] == \
        sum(per_model.values())
    # sequential: the largest single layer; group: two of them (one computing, one copied)
    largest = max(sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
                  + sum(b.numel() * b.element_size() for b in m.buffers(recurse=False))
                  for name in per_model for m in getattr(pipe, name).modules()
                  if not list(m.children()))
    assert estimate_peak([backbone], "sequential", 9, 32, 32, 3.0)["weights_bytes"] == largest
    assert estimate_peak([backbone], "group", 9, 32, 32, 3.0)["weights_bytes"] == 2 * largest
    # activations: the documented formula by hand (tiny Wan: 3 latent frames of 4x4, patch
    # 2 -> 12 tokens; ffn 32, hidden 2 heads * 12; bfloat16; Wan runs CFG as two passes)
    assert estimate["denoise_activations_bytes"] == 1 * 12 * (32 + 4 * 24) * 2
    # the VAE decodes 4 frames at once at 32x32 with base_dim 3 channels, 4 maps, float32
    assert estimate["decode_activations_bytes"] == 4 * 32 * 32 * 3 * 4 * 4
    assert estimate["peak_bytes"] == estimate["weights_bytes"] + max(
        estimate["denoise_activations_bytes"], estimate["decode_activations_bytes"])


def test_memory_estimate_is_printed_and_recorded(tiny, tmp_path):
    import json

    result = cli(tiny, tmp_path, "--attention-backend", "native")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("estimated peak"))
    assert "weights" in line and "--offload none" in line and "activations" in line
    info = json.loads(next((tmp_path / "out").glob("0*.json")).read_text())
    backbone = load_backbone(str(tiny("wan")))
    weights = sum(t.numel() * t.element_size() for name in ("text_encoder", "transformer", "vae")
                  for module in [getattr(backbone.pipe, name)]
                  for t in [*module.parameters(), *module.buffers()])
    assert info["memory_estimate"]["weights_bytes"] == weights
    assert info["offload"] == "none"


# -- 4. attention backend ---------------------------------------------------------------------

@pytest.mark.parametrize("family", ["wan", "ltx"])
def test_attention_backend_native_is_set_and_runs(tiny, tmp_path, family):
    from diffusers.models.attention_dispatch import AttentionBackendName

    backbone = load_backbone(str(tiny(family)), attention_backend="native")
    backends = [m.processor._attention_backend for m in backbone.pipe.transformer.modules()
                if hasattr(getattr(m, "processor", None), "_attention_backend")]
    assert backends and set(backends) == {AttentionBackendName.NATIVE}
    chunked(backbone, frames=9, search_k=1)(ONE, 1, tmp_path / "a.mp4", tmp_path / "st")
    assert (tmp_path / "a.mp4").stat().st_size > 0


@pytest.mark.parametrize(("family", "name", "says"), [
    ("wan", "fastest", "unknown; one of"), ("cogvideox", "native", "does not dispatch")])
def test_attention_backend_mistakes_are_one_line(tiny, tmp_path, family, name, says):
    result = cli(tiny, tmp_path, "--attention-backend", name, family=family)
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert says in last and "Traceback" not in result.output
    if family == "wan":
        assert "native" in last and "flash" in last


# -- 5. LoRA ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lora(tiny, tmp_path_factory):
    """A LoRA for the tiny Wan transformer (random, non-zero B), saved as diffusers saves one."""
    from diffusers import WanPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(0)
    transformer = load_backbone(str(tiny("wan"))).pipe.transformer
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    folder = tmp_path_factory.mktemp("lora")
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(
        transformer))
    return folder / "pytorch_lora_weights.safetensors"


def one_chunk(backbone, tmp_path, name: str):
    generator = chunked(backbone, frames=9, search_k=1)
    generator(ONE, 4, tmp_path / f"{name}.mp4", tmp_path / name)
    return generator._load(tmp_path / name, 0)[0]["latents"]


def test_lora_changes_the_output_and_scale_0_does_not(tiny, tiny_lora, tmp_path):
    plain = one_chunk(load_backbone(str(tiny("wan"))), tmp_path, "plain")
    lora = load_backbone(str(tiny("wan")), loras=[str(tiny_lora)])
    assert lora.loras == [{"source": str(tiny_lora), "scale": 1.0, "adapter": "lora0",
                           "into": ["transformer"]}]
    assert not torch.allclose(one_chunk(lora, tmp_path, "lora"), plain, atol=1e-4)
    # the folder form, at scale 0: the adapter is loaded and weighs nothing
    zero = load_backbone(str(tiny("wan")), loras=[f"{tiny_lora.parent}:0"])
    assert zero.pipe.get_active_adapters() == ["lora0"]
    assert torch.allclose(one_chunk(zero, tmp_path, "zero"), plain, atol=1e-6)


def test_parse_lora():
    from generate.loading import parse_lora

    assert parse_lora("org/name") == ("org/name", 1.0)
    assert parse_lora("a/b.safetensors:0.5") == ("a/b.safetensors", 0.5)
    assert parse_lora("C:/x/y") == ("C:/x/y", 1.0)


def test_bad_lora_is_one_line(tiny, tmp_path):
    garbage = tmp_path / "bad.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    for spec, says in ((str(tmp_path / "missing.safetensors"), "no such file"),
                       (str(garbage), "cannot load it as a LoRA")):
        result = cli(tiny, tmp_path, "--lora", spec)
        assert result.exit_code == 2, result.output
        last = result.output.strip().splitlines()[-1]
        assert "--lora" in last and says in last and "Traceback" not in result.output


# -- 6. anchor steps --------------------------------------------------------------------------

def spy_steps(monkeypatch, scheduler_cls) -> list[dict]:
    """The sample every `scheduler.step` steps from, with the scheduler's sigma for it."""
    calls: list[dict] = []
    original = scheduler_cls.step

    def step(self, model_output, timestep, sample, *args, **kwargs):
        before = sample.clone()
        output = original(self, model_output, timestep, sample, *args, **kwargs)
        calls.append({"sample": before, "sigma": float(self.sigmas[self.step_index - 1])})
        return output

    monkeypatch.setattr(scheduler_cls, "step", step)
    return calls


@pytest.mark.parametrize(("anchor_steps", "pins"), [(None, [2, 3]), (5, [3, 5]), (0, [0, 0])])
def test_anchor_steps_sets_how_long_anchors_are_pinned(tiny, tmp_path, monkeypatch,
                                                       anchor_steps, pins):
    """Read where the scheduler steps: latent m of chunk 1 is its clean anchor re-noised to
    the step's sigma exactly while step i < pins[m]; the default is --reuse-guidance's
    staging (beta 0.4 of 6 steps: 3 for the latent next to the new frames)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    backbone = load_backbone(str(tiny("wan")))
    encoded = []
    original = Backbone.encode
    monkeypatch.setattr(Backbone, "encode",
                        lambda self, frames: encoded.append(original(self, frames)) or encoded[-1])
    settings = ChunkSettings(frames=13, chunk_frames=9, overlap=5, continue_mode="anchor",
                             steps=6, guidance=1.0, height=32, width=32, search_k=1,
                             anchor_steps=anchor_steps, anchor_release=None)
    generator = ChunkedGenerator(backbone, settings)
    calls = spy_steps(monkeypatch, FlowMatchEulerDiscreteScheduler)
    info = generator(ONE, 2, tmp_path / "a.mp4", tmp_path / "st")
    assert info["chunk_details"][1]["pinned_steps"] == pins
    clean = encoded[0].float()
    noise = generator._load(tmp_path / "st", 1)[0]["initial"]
    for i, call in enumerate(calls[6:]):
        sigma = call["sigma"]
        for m in range(2):
            expected = (1 - sigma) * clean[:, :, m] + sigma * noise[:, :, m]
            pinned = torch.allclose(call["sample"][:, :, m].float(), expected, atol=1e-5)
            if i:  # step 0 steps from the initial noise itself (sigma 1)
                assert pinned == (i < pins[m]), (i, m)


def test_anchor_steps_and_compile_mode_mistakes_are_one_line(tiny, tmp_path):
    result = cli(tiny, tmp_path, "--anchor-steps", "3", "--frames", "13", "--continue",
                 "anchor", "--overlap", "5")
    assert result.exit_code == 2 and "--anchor-steps must be in 0..--steps (2), got 3" in \
        result.output.strip().splitlines()[-1]
    result = cli(tiny, tmp_path, "--compile", "--compile-mode", "fastest")
    assert result.exit_code == 2 and "--compile-mode must be one of default, " in \
        result.output.strip().splitlines()[-1]


# -- 7. torch.compile -------------------------------------------------------------------------

def test_compile_wraps_the_transformer_and_keeps_the_output(tiny, tmp_path, monkeypatch):
    """The real `nn.Module.compile` with Dynamo's `eager` backend: the transformer's calls are
    traced into graphs (inductor's code generation works here too but takes about a minute on
    two cores for the tiny model, so the test leaves it out); the latents do not change."""
    import torch._dynamo

    modes = []
    original = torch.nn.Module.compile

    def compile_eager(self, *args, **kwargs):
        modes.append(kwargs.get("mode"))
        return original(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eager)
    plain = one_chunk(load_backbone(str(tiny("wan"))), tmp_path, "plain")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = load_backbone(str(tiny("wan")), compile_mode="max-autotune")
    assert modes == ["max-autotune"] and compiled.pipe.transformer._compiled_call_impl
    assert torch.equal(one_chunk(compiled, tmp_path, "compiled"), plain)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    torch._dynamo.reset()


# -- 9. a separate --i2v-model shares what is the same ----------------------------------------

def test_i2v_model_shares_identical_components(tiny, tmp_path, monkeypatch):
    """The t2v text encoder, tokenizer and VAE are passed to the I2V `from_pretrained` when
    their class, config and weight files are the same (sha256, cached), so they are loaded
    once; a component whose weights differ is loaded from its own folder."""
    import json
    import shutil

    from generate.loading import _hash_cache_path
    from generate.runner import GenerateOptions, _load

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    i2v = tmp_path / "i2v"
    shutil.copytree(build_tiny_pipeline(tmp_path / "built", "wan-i2v"), i2v)
    for name in ("text_encoder", "tokenizer", "vae"):  # as Wan's I2V checkpoints ship them
        shutil.rmtree(i2v / name)
        shutil.copytree(tiny("wan") / name, i2v / name)
    options = GenerateOptions(prompts=tmp_path / "p.txt", model=str(tiny("wan")), out=tmp_path,
                              continue_mode="i2v", i2v_model=str(i2v), search_k=1)
    backbone, generator, _ = _load(options)
    for name in ("text_encoder", "tokenizer", "vae"):
        assert getattr(generator.i2v.pipe, name) is getattr(backbone.pipe, name), name
    assert generator.i2v.pipe.transformer is not backbone.pipe.transformer
    assert generator.i2v.shared == ["text_encoder", "tokenizer", "vae"]
    assert generator.i2v.prompt_cache is backbone.prompt_cache  # a text is encoded once
    hashes = json.loads(_hash_cache_path().read_text())
    assert any("diffusion_pytorch_model.safetensors" in key for key in hashes)
    # a VAE with other weights (one byte of the file changed) is its own
    weights = next((i2v / "vae").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    backbone, generator, _ = _load(options)
    assert generator.i2v.pipe.vae is not backbone.pipe.vae
    assert generator.i2v.pipe.text_encoder is backbone.pipe.text_encoder


# -- Wan 2.2 A14B: the low-noise expert gets everything the high-noise one gets --------------

def test_wan22_low_noise_expert_gets_lora_compile_attention_and_guidance_2(tiny, tiny_lora,
                                                                          tmp_path):
    """`transformer_2` runs every step below boundary_ratio * 1000 (here the second of two
    steps, t = 500 < 875): a LoRA, --compile and --attention-backend must reach it, and
    --guidance-2 must be its CFG scale."""
    backbone = load_backbone(str(tiny("wan22")), loras=[str(tiny_lora)],
                             attention_backend="native", compile_mode="default")
    experts = (backbone.pipe.transformer, backbone.pipe.transformer_2)
    assert backbone.two_experts
    for expert in experts:
        assert "lora0" in expert.peft_config
        assert expert._compiled_call_impl is not None
        backends = {m.processor._attention_backend for m in expert.modules()
                    if hasattr(getattr(m, "processor", None), "_attention_backend")}
        assert backends == {"native"}
    assert backbone.loras[0]["into"] == ["transformer", "transformer_2"]

    plain = load_backbone(str(tiny("wan22")))

    def final(guidance_2):
        generator = chunked(plain, frames=9, search_k=1, guidance_2=guidance_2)
        name = f"g{guidance_2}"
        generator(ONE, 4, tmp_path / f"{name}.mp4", tmp_path / name)
        return generator._load(tmp_path / name, 0)[0]["latents"]

    same = final(None)  # diffusers' default: guidance_scale_2 = guidance_scale (3.0)
    assert torch.equal(final(3.0), same)
    assert not torch.allclose(final(9.0), same, atol=1e-4)


def test_guidance_2_on_one_expert_is_one_line(tiny, tmp_path):
    result = cli(tiny, tmp_path, "--guidance-2", "4")
    assert result.exit_code == 2
    assert "--guidance-2 is for two-expert pipelines (Wan 2.2 A14B)" in \
        result.output.strip().splitlines()[-1]
