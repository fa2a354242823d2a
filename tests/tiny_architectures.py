"""Tiny random models of every architecture the captioners support, laid out as the real
checkpoints are, for tests/test_architectures.py.

Each builder writes a folder with `save_pretrained` from the REAL config, model, processor and
tokenizer classes (dimensions shrunk, random weights under a fixed seed), so a captioner loads
it through `--model DIR` exactly as it loads a download. The tokenizers are real too, with each
family's special tokens and quirks, trained on `CORPUS` in well under a second:

- SentencePiece models (the `sentencepiece` trainer) for the Llama family (Vicuna, Llama-2,
  LLaVA-1.5: <unk>=0 <s>=1 </s>=2, a "▁" put before the text), Gemma (<pad>=0 <eos>=1 <bos>=2
  <unk>=3, no "▁" put before) and Flan-T5 (unigram, <pad>=0 </s>=1 <unk>=2);
- byte-level BPE (the `tokenizers` trainer) for OPT (GPT-2's tokenizer with "</s>" as BOS),
  Qwen2 (Qwen2.5-VL, LLaVA-OneVision) and SmolVLM;
- WordPiece over the corpus words for InstructBLIP's BERT Q-Former tokenizer.

The trained tokenizer files are kept in `folder/reference/` (`tokenizer.model` or a
`tokenizers` `tokenizer.json`), so a test computes the ids a reference implementation would
get with sentencepiece or tokenizers alone, not through transformers. The models have no byte
fallback (random captions then decode to text rather than to bytes that all print as "�"),
and no constant weight tensor (`random_model`), so a caption depends on its frames.

Chat templates are minimal versions of each family's real one, in the shape transformers' own
processor tests use: the special tokens and where the images go are the real ones.

LLaVA-OneVision, Qwen2.5-VL and SmolVLM processors include a video processor, which
transformers builds only with torchvision. Without torchvision these builders return the
processor built in code (real classes, no video part) for the test to hand to the captioner;
with torchvision the processor is saved in the folder like every other.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

CORPUS = [
    "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once "
    "I provide it to you. Please answer my questions.",
    "###Human: <Img><ImageHere></Img> This is a frame from a video of playing guitar. Describe "
    "what is happening in it.###Assistant: a man plays a guitar on a stage",
    "[INST] <Img><ImageHere></Img> Question: what happens in the picture? Answer: [/INST] ",
    "These are frames from one video. Its category is 'rocket launch'. Describe in one or two "
    "sentences what happens in the video.",
    "These are descriptions of frames from one video of petting cat: a woman pets a cat. Write "
    "one sentence describing the whole video.",
    "a the dog red car beach walking running riding bike person something close up of hands",
]
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
IMAGE_SIZE = 32  # every vision tower here reads 32x32 pixels in 8x8 patches
QUERY_TOKENS = 4  # BLIP-2 / InstructBLIP Q-Former queries
LLAMA_SPECIALS = {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}


@dataclass
class Tiny:
    """A built model: its folder, and the processor to hand to the captioner when the folder
    cannot hold it (a video processor without torchvision), else None."""

    folder: Path
    processor: Any = None

    @property
    def reference(self) -> Path:
        """The trained tokenizer file (SentencePiece `tokenizer.model` or `tokenizer.json`)."""
        return next((self.folder / "reference").iterdir())


# --- tokenizers ------------------------------------------------------------------------------


def train_sentencepiece(path: Path, specials: dict[str, str], model_type: str = "bpe",
                        dummy_prefix: bool = True, vocab_size: int = 300) -> Path:
    """A SentencePiece model trained on `CORPUS`, written to `path` (folders made).

    Args:
        specials: role ("unk", "bos", "eos", "pad") -> piece, in id order from 0.
        model_type: "bpe" (Llama, Gemma) or "unigram" (T5).
        dummy_prefix: whether a "▁" is put before the text (Llama, T5: yes; Gemma: no).
    """
    import sentencepiece

    roles = list(specials)
    ids = {f"{role}_id": roles.index(role) if role in roles else -1
           for role in ("unk", "bos", "eos", "pad")}
    pieces = {f"{role}_piece": piece for role, piece in specials.items()}
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, character_coverage=1.0, normalization_rule_name="identity",
        add_dummy_prefix=dummy_prefix, remove_extra_whitespaces=False, hard_vocab_limit=False,
        minloglevel=2, **ids, **pieces,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path


def train_byte_bpe(folder: Path, specials: list[str], vocab_size: int = 300):
    """A byte-level BPE (GPT-2 style) trained on `CORPUS`, saved as `folder/reference/
    tokenizer.json`; returns its vocab and merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    (folder / "reference").mkdir(parents=True, exist_ok=True)
    core.save(str(folder / "reference" / "tokenizer.json"))
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" "))
              for pair in json.loads(core.to_str())["model"]["merges"]]
    return core.get_vocab(), merges


def llama_tokenizer(folder: Path, **settings):
    """A Llama SentencePiece tokenizer (`folder/reference/tokenizer.model`) loaded through
    `AutoTokenizer` from the files old Llama folders have: `tokenizer.model` and
    `tokenizer_config.json` (`settings` added to the latter)."""
    model = train_sentencepiece(folder / "reference" / "tokenizer.model", LLAMA_SPECIALS)
    return _slow_files_tokenizer(folder / "sentencepiece", model, {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "model_max_length": 2048, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>"} | settings)


def _slow_files_tokenizer(folder: Path, model: Path, settings: dict, name="tokenizer.model"):
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, folder / name)
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return AutoTokenizer.from_pretrained(folder)


def qwen2_tokenizer(folder: Path, extra: list[str]):
    """A Qwen2 byte-level BPE tokenizer with the ChatML tokens and `extra` special tokens."""
    from transformers import Qwen2Tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab, merges = train_byte_bpe(folder, specials)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:] + extra})
    return tokenizer


BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(
    {word.strip(".,:?'<>/[]#") for text in CORPUS for word in text.lower().split()} - {""}),
    ".", ",", ":", "?", "'", "<", ">", "/", "[", "]", "#", "[DEC]"]


# --- model helpers ---------------------------------------------------------------------------


def vision_config(**more) -> dict:
    return dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.3) | more


def llm_config(tokenizer, eos: str | None = None, **more) -> dict:
    """A 2-layer language model over `tokenizer`'s vocabulary, ending at `eos` (default: the
    tokenizer's end token)."""
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.convert_tokens_to_ids(eos) if eos else tokenizer.eos_token_id)
    return dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=512, initializer_range=0.3) | ids | more


def random_model(model_class, config, seed: int = 0):
    """`model_class(config)` with random weights and no constant tensor left: initialisation
    zeroes some projections (Gemma-3's image projection) and sets norms to one, which would
    make a caption blind to its frames and hide a frame mix-up from the tests."""
    import torch

    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1 and bool((parameter == parameter.flatten()[0]).all()):
                parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


def save(model, processor, folder: Path) -> Tiny:
    """Save the model, and the processor where it can be saved (see the module docstring)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(folder)
    if getattr(processor, "video_processor", False) is None:
        return Tiny(folder, processor)
    processor.save_pretrained(folder)
    return Tiny(folder)


def with_video_part(processor_class, **parts):
    """`processor_class(**parts)` with its real video processor where torchvision is installed,
    else with none (transformers' class check refuses None, so it is lifted for the call)."""
    from transformers.processing_utils import ProcessorMixin

    if HAS_TORCHVISION:
        return processor_class(**parts)
    check = ProcessorMixin.check_argument_for_proper_class
    try:
        ProcessorMixin.check_argument_for_proper_class = (
            lambda self, name, value: None if value is None else check(self, name, value))
        return processor_class(video_processor=None, **parts)
    finally:
        ProcessorMixin.check_argument_for_proper_class = check


# --- chat VLMs (the `vlm` captioner) ---------------------------------------------------------

GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + message['role'] + '\\n' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}"
    "{{ '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def build_gemma3(folder: Path) -> Tiny:
    """Gemma-3: SigLIP tower, 4 soft tokens per image (4x4 patches pooled 2x2), a Gemma
    tokenizer that adds `<bos>` itself and a chat template that writes `<bos>` too."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
    )

    model = train_sentencepiece(folder / "reference" / "tokenizer.model", {
        "pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}, dummy_prefix=False)
    tokenizer = _slow_files_tokenizer(folder / "sentencepiece", model, {
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "extra_special_tokens": {"image_token": "<image_soft_token>",
                                 "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}})
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>",
                                                                "<end_of_turn>"]},
                                 replace_extra_special_tokens=False)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, chat_template=GEMMA3_TEMPLATE, image_seq_length=4)
    config = Gemma3Config(
        text_config=llm_config(tokenizer, eos="<end_of_turn>", head_dim=8, sliding_window=16,
                               layer_types=["sliding_attention", "full_attention"]),
        vision_config=vision_config(), mm_tokens_per_image=4,
        boi_token_index=tokenizer.boi_token_id, image_token_index=tokenizer.image_token_id,
        eoi_token_index=tokenizer.convert_tokens_to_ids(tokenizer.eoi_token),
    )
    return save(random_model(Gemma3ForConditionalGeneration, config), processor, folder)


LLAVA_TEMPLATE = (  # llava-hf/llava-1.5: "USER: <image>\n{text} ASSISTANT:"
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for item in message['content'] if item['type'] == 'image' %}{{ '<image>\\n' }}{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ item['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_llava(folder: Path) -> Tiny:
    """LLaVA-1.5 (llava-hf layout): CLIP tower (class token dropped: 16 tokens per image), a
    Llama tokenizer with `<image>` and `<pad>` added after the vocabulary."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = llama_tokenizer(folder)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision_config(projection_dim=16)),
        text_config=LlamaConfig(**llm_config(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=16,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    return save(random_model(LlavaForConditionalGeneration, config), processor, folder)


LLAVA_ONEVISION_TEMPLATE = (  # "<|im_start|>user <image>\n{text}<|im_end|><|im_start|>assistant\n"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for item in message['content'] if item['type'] == 'image' %}{{ '<image>' }}{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ '\\n' + item['text'] }}"
    "{% endfor %}{{ '<|im_end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ONEVISION_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


def build_llava_onevision(folder: Path) -> Tiny:
    """LLaVA-OneVision: SigLIP tower (16 tokens per 32 px tile), anyres tiling of a single
    image (grid pinpoints up to 64x64), a Qwen2 tokenizer with `<image>` and `<video>`."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
    )

    tokenizer = qwen2_tokenizer(folder, ["<image>", "<video>"])
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_grid_pinpoints=ONEVISION_PINPOINTS)
    processor = with_video_part(
        LlavaOnevisionProcessor, image_processor=image_processor, tokenizer=tokenizer,
        num_image_tokens=16, vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_TEMPLATE)
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", **vision_config()),
        text_config=dict(model_type="qwen2", **llm_config(tokenizer, eos="<|im_end|>")),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=ONEVISION_PINPOINTS, vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return save(random_model(LlavaOnevisionForConditionalGeneration, config), processor, folder)


QWEN2_5_VL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}{% elif item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_qwen2_5_vl(folder: Path) -> Tiny:
    """Qwen2.5-VL: 4 px patches merged 2x2 (a 32x32 frame is 16 tokens), windowed attention,
    multimodal rotary positions, a Qwen2 tokenizer with the vision tokens."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    vision = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = qwen2_tokenizer(folder, vision)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in vision}
    image_processor = Qwen2VLImageProcessor(patch_size=4, merge_size=2, temporal_patch_size=2,
                                            min_pixels=16 * 16, max_pixels=IMAGE_SIZE ** 2)
    processor = with_video_part(Qwen2_5_VLProcessor, image_processor=image_processor,
                                tokenizer=tokenizer, chat_template=QWEN2_5_VL_TEMPLATE)
    config = Qwen2_5_VLConfig(
        text_config=llm_config(tokenizer, eos="<|im_end|>", rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2,
                           out_hidden_size=32, patch_size=4, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=8, fullatt_block_indexes=[1],
                           initializer_range=0.3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    return save(random_model(Qwen2_5_VLForConditionalGeneration, config), processor, folder)


SMOLVLM_TEMPLATE = (  # transformers' SmolVLM processor test template
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_smolvlm(folder: Path) -> Tiny:
    """SmolVLM: a SigLIP-like tower, pixel shuffle by 2 (4 tokens per 32 px tile), each image
    split into 32 px tiles plus a global view, a GPT-2 style tokenizer with `<image>`,
    `<fake_token_around_image>`, `<global-img>` and the `<row_i_col_j>` tokens."""
    from transformers import (
        GPT2Tokenizer,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
    )

    vocab, merges = train_byte_bpe(folder, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="<|im_start|>",
                              eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token="<|endoftext|>")
    grid = [f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)]
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *grid]})
    image_processor = SmolVLMImageProcessor(
        size={"longest_edge": 2 * IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=True)
    processor = with_video_part(SmolVLMProcessor, image_processor=image_processor,
                                tokenizer=tokenizer, image_seq_len=4,
                                chat_template=SMOLVLM_TEMPLATE)
    config = SmolVLMConfig(
        vision_config=vision_config(), scale_factor=2,
        text_config=dict(model_type="llama", **llm_config(tokenizer, eos="<end_of_utterance>")),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    built = save(random_model(SmolVLMForConditionalGeneration, config), processor, folder)
    if built.processor is not None:  # its chat template reads the video sampling defaults
        built.processor.video_processor = SimpleNamespace(num_frames=None, fps=None)
    return built


# --- BLIP-2 and InstructBLIP ------------------------------------------------------------------


def _blip_parts(qformer_text: bool = False) -> dict:
    return dict(
        vision_config=vision_config(hidden_size=32, num_attention_heads=4),
        qformer_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, encoder_hidden_size=32,
                            max_position_embeddings=64, use_qformer_text_input=qformer_text,
                            vocab_size=len(BERT_VOCAB), initializer_range=0.3),
        num_query_tokens=QUERY_TOKENS, initializer_range=0.3,
    )


def _blip_image_processor():
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def build_blip2(folder: Path, variant: str) -> Tiny:
    """BLIP-2 with OPT ("opt": GPT-2 BPE, <s>=0 <pad>=1 </s>=2 <unk>=3, "</s>" put before every
    text as facebook/opt-* do) or Flan-T5 ("t5": SentencePiece unigram, "</s>" after every
    text): a ViT, a Q-Former with 4 queries, and the language model."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        GPT2Tokenizer,
    )

    if variant == "opt":
        vocab, merges = train_byte_bpe(folder, ["<s>", "<pad>", "</s>", "<unk>"])
        tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>",
                                  unk_token="</s>", pad_token="<pad>", add_bos_token=True)
    else:
        model = train_sentencepiece(folder / "reference" / "spiece.model", {
            "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}, model_type="unigram")
        tokenizer = _slow_files_tokenizer(folder / "sentencepiece", model, {
            "tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>",
            "pad_token": "<pad>", "unk_token": "<unk>"}, name="spiece.model")
    processor = Blip2Processor(_blip_image_processor(), tokenizer, num_query_tokens=QUERY_TOKENS)
    if variant == "opt":
        text = dict(model_type="opt", ffn_dim=64, word_embed_proj_dim=32, init_std=0.3,
                    **{key: value for key, value in llm_config(tokenizer).items()
                       if key not in ("intermediate_size", "num_key_value_heads",
                                      "initializer_range")})
    else:
        text = dict(model_type="t5", vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37,
                    num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                    feed_forward_proj="gated-gelu", initializer_factor=3.0,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                    decoder_start_token_id=tokenizer.pad_token_id)
    config = Blip2Config(text_config=text, **_blip_parts(),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    return save(random_model(Blip2ForConditionalGeneration, config), processor, folder)


def build_instructblip_vicuna(folder: Path) -> Tiny:
    """InstructBLIP-Vicuna as Salesforce/instructblip-vicuna-7b has it: a Llama tokenizer whose
    BOS and UNK are "</s>", which pads with "[PAD]" (an id after the vocabulary) and whose
    config says `padding_side: left`; a config pad id 0; the Q-Former reads the instruction
    through a BERT WordPiece tokenizer."""
    from transformers import (
        BertTokenizer,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        LlamaConfig,
    )

    tokenizer = llama_tokenizer(folder, bos_token="</s>", unk_token="</s>", padding_side="left")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    qformer_tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(BERT_VOCAB)},
                                      bos_token="[DEC]")
    processor = InstructBlipProcessor(_blip_image_processor(), tokenizer, qformer_tokenizer,
                                      num_query_tokens=QUERY_TOKENS)
    text = LlamaConfig(**(llm_config(tokenizer) | {"pad_token_id": 0}))
    config = InstructBlipConfig(text_config=text.to_dict(), **_blip_parts(qformer_text=True),
                                image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    return save(random_model(InstructBlipForConditionalGeneration, config), processor, folder)


# --- MiniGPT-4 --------------------------------------------------------------------------------


def build_minigpt4(folder: Path, variant: str) -> Tiny:
    """MiniGPT-4 as a user assembles it (captioners/minigpt4.py): a BLIP-2 Flan-T5 folder for
    the vision side, a Llama causal LM, the projection in the official `.pth` layout, and
    `minigpt4.json`.

    Args:
        variant: "vicuna" (Vicuna v0: the LM folder has only `tokenizer.model` and its config,
            as FastChat's apply_delta writes them; the projection reads the Q-Former's 32-wide
            outputs) or "llama2" (Llama-2-chat: `tokenizer.json` and `legacy: false`, as
            meta-llama/Llama-2-7b-chat-hf has them; the projection reads 4 ViT tokens at once).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    build_blip2(folder / "vision", "t5")
    lm = folder / "lm"
    tokenizer = llama_tokenizer(folder)
    shutil.copytree(folder / "sentencepiece", lm)
    config = LlamaConfig(**(llm_config(tokenizer) | {"pad_token_id": None}))
    random_model(LlamaForCausalLM, config, seed=1).save_pretrained(lm)
    if variant == "llama2":
        for name in ("tokenizer.model", "tokenizer_config.json"):
            (lm / name).unlink()
        tokenizer.save_pretrained(lm)
        settings = json.loads((lm / "tokenizer_config.json").read_text())
        (lm / "tokenizer_config.json").write_text(json.dumps(settings | {"legacy": False}))
    torch.manual_seed(2)
    projection = torch.nn.Linear(32 if variant == "vicuna" else 4 * 32, config.hidden_size)
    torch.save({"model": {"llama_proj.weight": projection.weight.detach().clone(),
                          "llama_proj.bias": projection.bias.detach().clone()}},
               folder / "pretrained_minigpt4.pth")
    (folder / "minigpt4.json").write_text(json.dumps(
        {"vision": "vision", "lm": "lm", "projection": "pretrained_minigpt4.pth"}))
    return Tiny(folder)
