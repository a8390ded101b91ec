"""Real model shapes with random weights, and a byte-level tokenizer of any vocabulary size.

Benchmarks measure speed, which depends on a model's shape and not on its weights, so they build
Qwen2.5 and SmolLM2 architectures from configs (no hub access) with random weights. The tokenizer
encodes text one byte per token, so prompts of exactly N tokens are easy to write, and has the
shape's full vocabulary, so every sampled id decodes to text a reward function can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from rlhf.models.loading import (
    BYTE_TOKENIZER_SPECIALS,
    CHATML_TEMPLATE,
    _byte_to_unicode,
    resolve_device,
    resolve_dtype,
)


@dataclass(frozen=True)
class ModelShape:
    """The config of a causal LM architecture, without weights."""

    name: str
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    rope_theta: float
    rms_norm_eps: float = 1e-6

    def config(self) -> Any:
        from transformers import LlamaConfig, Qwen2Config

        configs = {"llama": LlamaConfig, "qwen2": Qwen2Config}
        return configs[self.architecture](
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            tie_word_embeddings=self.tie_word_embeddings,
            rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=32768,
            bos_token_id=None,
            eos_token_id=BYTE_TOKENIZER_SPECIALS.index("<|im_end|>"),
            pad_token_id=BYTE_TOKENIZER_SPECIALS.index("<|endoftext|>"),
        )


MODEL_SHAPES: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape("qwen2.5-0.5b", "qwen2", 896, 4864, 24, 14, 2, 151936, True, 1e6),
        ModelShape("qwen2.5-1.5b", "qwen2", 1536, 8960, 28, 12, 2, 151936, True, 1e6),
        ModelShape("smollm2-135m", "llama", 576, 1536, 30, 9, 3, 49152, True, 1e5, 1e-5),
        ModelShape("tiny", "qwen2", 64, 128, 2, 4, 2, 512, False, 1e4),
    )
}


def model_shape(name: str) -> ModelShape:
    if name not in MODEL_SHAPES:
        raise ValueError(f"unknown model shape {name!r}; known: {sorted(MODEL_SHAPES)}")
    return MODEL_SHAPES[name]


def filler_byte_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer of exactly ``vocab_size`` ids: :func:`rlhf.models.loading.byte_tokenizer`'s
    3 specials and 256 bytes, then filler tokens ``" w0"``, ``" w1"``, ... that text never encodes
    to but sampled ids decode from.

    Text encodes one byte per token, so a prompt of N ASCII characters is N tokens. It has no merges,
    so transformers' Qwen2 and Llama tokenizer classes, which rebuild a byte-level BPE from the saved
    vocabulary when a checkpoint is loaded, encode and decode exactly as this object does.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    base = len(BYTE_TOKENIZER_SPECIALS) + 256
    if vocab_size < base:
        raise ValueError(f"vocab_size must be at least {base} (specials and bytes), got {vocab_size}")
    vocab = {token: index for index, token in enumerate(BYTE_TOKENIZER_SPECIALS)}
    for char in _byte_to_unicode().values():
        vocab[char] = len(vocab)
    space = _byte_to_unicode()[ord(" ")]
    for i in range(vocab_size - base):
        vocab[f"{space}w{i}"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in BYTE_TOKENIZER_SPECIALS]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def ascii_prompt(length: int, seed: int) -> str:
    """``length`` random ASCII letters and digits: exactly ``length`` tokens for
    :func:`filler_byte_tokenizer`."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(alphabet), (length,), generator=generator)
    return "".join(alphabet[i] for i in picks.tolist())


def random_model(
    shape: ModelShape | str,
    *,
    dtype: torch.dtype | str = "bfloat16",
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A randomly initialised model of ``shape`` in eval mode with frozen weights, and its tokenizer."""
    shape = model_shape(shape) if isinstance(shape, str) else shape
    device = resolve_device(device)
    gpus = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)
        # Initialising on the target device is far faster than on the CPU for billion-weight models.
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(shape.config(), dtype=resolve_dtype(dtype))
    model.generation_config.eos_token_id = BYTE_TOKENIZER_SPECIALS.index("<|im_end|>")
    model.generation_config.pad_token_id = BYTE_TOKENIZER_SPECIALS.index("<|endoftext|>")
    model.requires_grad_(False)
    return model.eval(), filler_byte_tokenizer(shape.vocab_size)


def save_random_checkpoint(
    shape: ModelShape | str,
    directory: str | Path,
    *,
    dtype: str = "bfloat16",
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> Path:
    """Write a random model of ``shape`` and its tokenizer to ``directory`` (a from_pretrained source).

    device: where the weights are initialised (a GPU is much faster for large shapes).
    """
    model, tokenizer = random_model(shape, dtype=dtype, device=device, seed=seed)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
