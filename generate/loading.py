"""Load diffusers video pipelines: find the family from `model_index.json`'s `_class_name`,
pick the device and dtype, share components between roles, and apply LoRAs, offload,
attention backends and `torch.compile`."""

from __future__ import annotations

import inspect
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from datakit.io.errors import UserError
from generate.backbone import Backbone
from generate.families import FAMILIES, ROLES, find_family

DTYPES = ("float32", "bfloat16", "float16")
OFFLOADS = ("none", "model", "sequential", "group")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the hub's host accepts a connection within `timeout`, else why not (so a
    missing network fails in seconds instead of the hub client's retries)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        return f"{host} is not reachable ({error.strerror or type(error).__name__})"
    return None


def _model_index(model: str) -> dict:
    """The `model_index.json` of a local folder or hub id (its `_class_name` names the
    pipeline, its other keys the components).

    A folder is read directly. Anything that is not an existing folder must look like a hub
    id (`name` or `org/name`); its `model_index.json` comes from the local hub cache, else
    from the hub (if the hub's host answers within seconds). Every failure is one line
    saying what was tried.
    """
    path = Path(model).expanduser()
    if path.exists():
        index = path / "model_index.json"
        if not index.is_file():
            raise UserError(f"{model}: not a diffusers pipeline folder (no model_index.json)")
        return _parse_index(index.read_text(), str(index))
    if not HUB_ID.match(model) or model.startswith((".", "~")):
        raise UserError(f"{model}: no such folder (and not a hub id like org/name)")
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(model, "model_index.json")
    if not isinstance(cached, str):
        if constants.HF_HUB_OFFLINE:
            raise UserError(f"{model}: no such folder, and not in the hub cache "
                            "(HF_HUB_OFFLINE is set, so the hub was not asked)")
        unreachable = hub_reachable()
        if unreachable:
            raise UserError(f"{model}: no such folder, not in the hub cache, and {unreachable}")
        try:
            cached = hf_hub_download(model, "model_index.json")
        except Exception as error:  # hub errors come in many types; all mean "cannot load"
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(f"{model}: no such folder, and the hub has no model_index.json "
                            f"for it ({type(error).__name__}: {first})") from None
    return _parse_index(Path(cached).read_text(), f"{model}: model_index.json")


def _parse_index(text: str, where: str) -> dict:
    try:
        index = json.loads(text)
        index["_class_name"]  # noqa: B018 (a pipeline index must name its class)
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{where}: unreadable model_index.json ({error})") from None
    return index


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` where a GPU is available, else `cpu` (as `caption` does); check that
    any other device exists here (`cuda` without a GPU is a user error)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available on this machine")
    if device.startswith("cuda:"):
        index = device.removeprefix("cuda:")
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has CUDA devices "
                            f"0..{torch.cuda.device_count() - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available on this machine")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise UserError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    return device


def share_backbone(backbone: Backbone, role: str) -> Backbone:
    """`backbone`'s pipeline as its family's `role` class, sharing every component (text
    encoder, VAE, transformer: no second copy in memory, each in the dtype it was loaded in)."""
    import diffusers

    cls_name = getattr(backbone.family, role)
    if cls_name is None:
        raise UserError(f"{backbone.family.label} has no {role} pipeline in diffusers that we "
                        "can drive")
    cls = getattr(diffusers, cls_name)
    # the class's own constructor, not `from_pipe`: diffusers 0.42's `from_pipe` casts every
    # shared model to one dtype (float32 unless told), which turned a bfloat16 transformer
    # into float32 in place (twice the memory) and would put Wan's VAE in bfloat16
    accepted = inspect.signature(cls.__init__).parameters
    pipe = cls(**{name: component for name, component in backbone.pipe.components.items()
                  if name in accepted})
    pipe.set_progress_bar_config(disable=True)
    shared = Backbone(pipe, backbone.family, role, backbone.source,
                      prompt_cache=backbone.prompt_cache)
    shared.offload, shared.loras = backbone.offload, backbone.loras
    return shared


SHAREABLE = ("text_encoder", "tokenizer", "vae")
HASH_CACHE = "file_hashes.json"


def _hash_cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "datakit" / HASH_CACHE


def file_sha256(path: Path) -> str:
    """The sha256 of a file, cached by (real path, size, mtime) in
    ~/.cache/datakit/file_hashes.json. A hub cache file is a link to `blobs/<sha256>`: that
    name is used as is (the hub names large files by their sha256), without reading it."""
    import hashlib

    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    stat = real.stat()
    key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_path = _hash_cache_path()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:
        from datakit.io.atomic import atomic_write

        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path, json.dumps(cache, indent=0))
    except OSError:  # a read-only home: the hash is still right, only not remembered
        pass
    return cache[key]


def _local_folder(model: str) -> Path | None:
    """The folder of a pipeline: a local folder, or a hub id's snapshot already in the hub
    cache (None when it is not there: nothing is downloaded to compare)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not cached (or not a hub id): no comparison, no sharing
        return None


def component_fingerprint(folder: Path, name: str) -> tuple | None:
    """What makes a pipeline component the same as another: its class (model_index.json),
    its config (without the `_`-prefixed bookkeeping keys such as `_diffusers_version`) and
    the sha256 of every other file in its folder (weights, tokenizer files). None when the
    component is missing."""
    try:
        entry = json.loads((folder / "model_index.json").read_text()).get(name)
    except (OSError, ValueError):
        return None
    sub = folder / name
    if not entry or not entry[0] or not sub.is_dir():
        return None
    files = []
    for path in sorted(p for p in sub.rglob("*") if p.is_file()):
        relative = path.relative_to(sub).as_posix()
        if path.name == "config.json":
            config = json.loads(path.read_text())
            files.append((relative, json.dumps({k: v for k, v in config.items()
                                                if not k.startswith("_")}, sort_keys=True)))
        else:
            files.append((relative, file_sha256(path)))
    return (tuple(entry), tuple(files))


def shared_components(model: str, other: str, pipe: Any,
                      names: tuple[str, ...] = SHAREABLE) -> dict[str, Any]:
    """The components of the loaded `pipe` (from `model`) that pipeline `other` has too,
    identical (same class, config and weight files; see `component_fingerprint`), to pass as
    `from_pretrained` keyword arguments so that they are not loaded a second time. Empty
    where either pipeline is not on disk here."""
    mine, theirs = _local_folder(model), _local_folder(other)
    if mine is None or theirs is None:
        return {}
    shared = {}
    for name in names:
        fingerprint = component_fingerprint(mine, name)
        if fingerprint is not None and fingerprint == component_fingerprint(theirs, name) \
                and getattr(pipe, name, None) is not None:
            shared[name] = getattr(pipe, name)
    return shared


def check_weights_reachable(model: str) -> None:
    """A one-line `UserError` when `model` is a hub id whose cached snapshot lacks a component
    folder `model_index.json` names and the hub cannot be asked (offline, or not reachable),
    instead of whatever error the loader of the first missing file raises."""
    from huggingface_hub import constants

    if Path(model).expanduser().exists():
        return
    folder = _local_folder(model)
    if folder is None:
        return
    index = json.loads((folder / "model_index.json").read_text())
    missing = [name for name, entry in index.items()
               if isinstance(entry, list) and entry[0] and not any((folder / name).glob("*"))]
    if not missing:
        return
    why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else hub_reachable())
    if why:
        raise UserError(f"{model}: its weights are not in the hub cache and could not be "
                        f"downloaded (missing {', '.join(missing)}; {why})")


def attention_backends() -> list[str]:
    """The names diffusers' `set_attention_backend` accepts (`AttentionBackendName`)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    return [name.value for name in AttentionBackendName]


def denoiser_of(pipe: Any):
    """The pipeline's denoising network: the transformer (ModelScope: the UNet)."""
    return getattr(pipe, "transformer", None) or pipe.unet


def denoisers_of(pipe: Any) -> list:
    """Every denoising network of the pipeline: the transformer, and Wan 2.2 A14B's low-noise
    expert `transformer_2` where the pipeline has one (ModelScope: the UNet)."""
    second = getattr(pipe, "transformer_2", None)
    return [denoiser_of(pipe)] + ([second] if second is not None else [])


def set_attention_backend(pipe: Any, backend: str, label: str) -> int:
    """Route the denoiser's attention through diffusers' backend `backend` (`native` is
    PyTorch's scaled_dot_product_attention; `flash`, `sage`, `xformers`, ... need their
    packages). Returns how many attention processors now use it; a one-line `UserError` for an
    unknown name, a backend whose package is missing, or a denoiser whose attention does not go
    through diffusers' dispatcher (CogVideoX's and ModelScope's processors call PyTorch
    directly, so a backend would silently do nothing there). Both of Wan 2.2 A14B's experts
    get it (`denoisers_of`)."""
    valid = attention_backends()
    if backend.lower() not in valid:
        raise UserError(f"--attention-backend {backend}: unknown; one of {', '.join(valid)}")
    count = 0
    for denoiser in denoisers_of(pipe):
        processors = [m.processor for m in denoiser.modules()
                      if hasattr(getattr(m, "processor", None), "_attention_backend")]
        if not processors:
            raise UserError(f"--attention-backend {backend}: {label}'s "
                            f"{type(denoiser).__name__} does not dispatch attention through "
                            "diffusers' backends")
        try:
            denoiser.set_attention_backend(backend.lower())
        except (RuntimeError, ValueError, ImportError) as error:
            first = (str(error).strip().splitlines()[0] if str(error).strip()
                     else type(error).__name__)
            raise UserError(f"--attention-backend {backend}: {first}") from None
        count += len(processors)
    return count


def parse_lora(spec: str) -> tuple[str, float]:
    """`PATH_OR_ID[:SCALE]` -> (source, scale); the scale defaults to 1.0."""
    source, _, scale = spec.rpartition(":")
    if source:
        try:
            return source, float(scale)
        except ValueError:
            pass
    return spec, 1.0


def load_loras(pipe: Any, specs: list[str], label: str) -> list[dict]:
    """Load each LoRA (`PATH_OR_ID[:SCALE]`: a `.safetensors` file, a folder holding
    `pytorch_lora_weights.safetensors`, or a hub id) as its own adapter (`lora0`, `lora1`, ...)
    with `pipe.load_lora_weights`, then make them all active at their scales with
    `pipe.set_adapters` (unfused: the weights stay as loaded and each adapter's scale
    applies). On Wan 2.2 A14B each LoRA goes into both experts (`transformer` and, with
    `load_into_transformer_2`, `transformer_2`) under the same adapter name. Needs `peft`.
    Returns what was loaded, for the sample json."""
    if not specs:
        return []
    if not hasattr(pipe, "load_lora_weights"):
        raise UserError(f"--lora: {label}'s {type(pipe).__name__} cannot load LoRA weights")
    try:
        import peft  # noqa: F401 - diffusers needs it for adapters
    except ImportError:
        raise UserError("--lora needs the peft package: pip install 'datakit[generate]'") \
            from None
    loaded = []
    for index, spec in enumerate(specs):
        source, scale = parse_lora(spec)
        name = f"lora{index}"
        path = Path(source).expanduser()
        kwargs: dict[str, Any] = {"adapter_name": name}
        if path.is_file():
            kwargs["weight_name"] = path.name
            where: str = os.fspath(path.parent)
        elif path.exists() or not HUB_ID.match(source):
            if not path.is_dir():
                raise UserError(f"--lora {spec}: no such file or folder")
            where = os.fspath(path)
        else:
            where = source
        experts = ["transformer"]
        if getattr(pipe, "transformer_2", None) is not None:
            experts.append("transformer_2")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe.load_lora_weights(where, **kwargs)
                if len(experts) == 2:
                    pipe.load_lora_weights(where, load_into_transformer_2=True, **kwargs)
        except Exception as error:  # loader errors come in many types; all mean "cannot load"
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(f"--lora {spec}: cannot load it as a LoRA for {label} "
                            f"({type(error).__name__}: {first})") from None
        loaded.append({"source": source, "scale": scale, "adapter": name,
                       "into": experts if hasattr(pipe, "transformer") else ["unet"]})
    pipe.set_adapters([x["adapter"] for x in loaded], [x["scale"] for x in loaded])
    return loaded


def apply_offload(pipe: Any, offload: str, device: str) -> None:
    """Place the pipeline's weights for `offload`:

    - `none`: everything on `device` (`pipe.to`).
    - `model`: `enable_model_cpu_offload`: each model (text encoder, transformer, VAE) moves
      to the GPU whole when it runs and back after; peak = the largest model.
    - `sequential`: `enable_sequential_cpu_offload`: every leaf module's weights move to the
      GPU only for its own forward; the lowest memory and by far the slowest.
    - `group`: `enable_group_offload` at `leaf_level` with a CUDA stream, so the next
      layers' weights are copied while the current ones compute (block_level would need a
      blocks-per-group count tuned per model; leaf_level with a stream is diffusers'
      recommended setting and is close to `none` in speed where PCIe keeps up).
    """
    import torch

    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload == "group":
        onload = torch.device(device)
        pipe.enable_group_offload(onload_device=onload, offload_device=torch.device("cpu"),
                                  offload_type="leaf_level", use_stream=onload.type == "cuda")
    elif offload == "none":
        pipe.to(device)
    else:
        raise UserError(f"--offload must be one of {', '.join(OFFLOADS)}, got {offload!r}")


def compile_denoiser(pipe: Any, mode: str = "default") -> None:
    """`torch.compile` the transformer (ModelScope: the UNet; Wan 2.2 A14B: both experts) in
    place (`nn.Module.compile`, so the pipeline still sees the same module, its config and
    dtype). The first call of each new shape compiles (minutes on a real model); chunks after
    that run the compiled code."""
    if mode not in COMPILE_MODES:
        raise UserError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, "
                        f"got {mode!r}")
    for denoiser in denoisers_of(pipe):
        denoiser.compile(mode=None if mode == "default" else mode)


def load_backbone(
    model: str,
    role: str = "t2v",
    device: str = "cpu",
    dtype: str | None = None,
    cpu_offload: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    offload: str = "none",
    attention_backend: str | None = None,
    loras: list[str] | tuple[str, ...] = (),
    compile_mode: str | None = None,
    components: dict[str, Any] | None = None,
) -> Backbone:
    """Load a pipeline from a hub id or local folder as a `Backbone` in `role`.

    Args:
        model: hub id or folder with a `model_index.json`.
        role: `t2v`, `i2v` or `v2v`. A text-to-video folder asked for `v2v` is loaded as
            its family's video-to-video class (they share every component).
        device: `auto` (`cuda` where available, else `cpu`), `cpu`, `cuda`, `cuda:N` or `mps`.
        dtype: `float32`, `bfloat16` or `float16` for the weights; None: bfloat16 on CUDA,
            float32 elsewhere. Wan's VAE and image encoder stay in float32 (their outputs
            degrade in half precision; diffusers' Wan examples load them so).
        cpu_offload: the same as `offload="model"` (kept for `--cpu-offload`).
        vae_tiling, vae_slicing: decode/encode in spatial tiles / one sample at a time.
        offload: `none`, `model`, `sequential` or `group` (see `apply_offload`); all but
            `none` need a CUDA device.
        attention_backend: a diffusers attention backend for the denoiser (see
            `set_attention_backend`); None leaves diffusers' default.
        loras: `PATH_OR_ID[:SCALE]` LoRAs to load (see `load_loras`).
        compile_mode: `torch.compile` the denoiser with this mode (see `compile_denoiser`);
            None: no compile.
        components: already loaded components to use instead of loading them (see
            `shared_components`); they are used as they are (dtype, device, offload).
    """
    import diffusers
    import torch
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    device = resolve_device(device)
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if cpu_offload and offload not in ("none", "model"):
        raise UserError(f"--cpu-offload is --offload model; it cannot go with --offload {offload}")
    offload = "model" if cpu_offload else offload
    if offload not in OFFLOADS:
        raise UserError(f"--offload must be one of {', '.join(OFFLOADS)}, got {offload!r}")
    if offload != "none" and not device.startswith("cuda"):
        option = "--cpu-offload" if cpu_offload else f"--offload {offload}"
        raise UserError(f"{option} needs --device cuda (it keeps weights on the CPU and moves "
                        f"them to the GPU as they run; on {device} they are already there)")
    if attention_backend is not None and attention_backend.lower() not in attention_backends():
        raise UserError(f"--attention-backend {attention_backend}: unknown; one of "
                        f"{', '.join(attention_backends())}")
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise UserError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, "
                        f"got {compile_mode!r}")
    index = _model_index(model)
    class_name = index["_class_name"]
    family, found = find_family(class_name)
    if role == "v2v" and found == "t2v" and (index.get("transformer_2") or [None])[0]:
        # the video-to-video pipeline has no slot for the low-noise expert: loaded as v2v,
        # every step would run on the high-noise one
        raise UserError(f"{model} has two experts (transformer_2: Wan 2.2 A14B); refinement "
                        "takes its low-noise expert from the generating pipeline, so give it "
                        "as --model and leave --refine-model out")
    if found != role and not (role == "v2v" and found == "t2v" and family.v2v):
        wanted = ", ".join(getattr(f, role) for f in FAMILIES.values() if getattr(f, role))
        raise UserError(f"{model} is a {class_name}; a {role} pipeline is needed here ({wanted})")
    cls_name = getattr(family, role)
    if cls_name is None:
        raise UserError(f"{family.label} has no {role} pipeline in diffusers that we can drive")
    check_weights_reachable(model)
    torch_dtype: Any = getattr(torch, dtype)
    if family.name == "wan" and dtype != "float32":  # as diffusers' own Wan examples do
        torch_dtype = {"default": torch_dtype, "vae": torch.float32,
                       "image_encoder": torch.float32}
    with warnings.catch_warnings():  # newer diffusers call it `dtype`; older ones only know this
        warnings.filterwarnings("ignore", "`torch_dtype` is deprecated", FutureWarning)
        try:
            pipe = getattr(diffusers, cls_name).from_pretrained(model, torch_dtype=torch_dtype,
                                                                **(components or {}))
        except OSError as error:  # weights neither in the hub cache nor downloadable
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(f"{model}: its weights are not in the hub cache and could not be "
                            f"downloaded ({type(error).__name__}: {first})") from None
    lora = load_loras(pipe, list(loras), family.label)
    if attention_backend is not None:
        set_attention_backend(pipe, attention_backend, family.label)
    apply_offload(pipe, offload, device)
    if compile_mode is not None:
        compile_denoiser(pipe, compile_mode)
    if vae_tiling:
        pipe.vae.enable_tiling()
    if vae_slicing:
        pipe.vae.enable_slicing()
    backbone = Backbone(pipe, family, role, os.fspath(model))
    backbone.offload = offload
    backbone.loras = lora
    backbone.shared = sorted(components or {})
    return backbone
