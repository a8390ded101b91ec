"""Model sources, the GGUF conversion cache, the tiny model, LoRA and adapter state round trips."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from rlhf.models.cache import SOURCE_RECORD, cached_checkpoint
from rlhf.models.loading import (
    POLICY_ADAPTER,
    adapter_parameters,
    adapter_state_dict,
    apply_lora,
    builtin_gguf_path,
    byte_tokenizer,
    load_adapter_state_dict,
    load_base_model,
    load_tokenizer,
    resolve_dtype,
    tiny_model_and_tokenizer,
    use_adapter,
)
from tests.rlhf.tiny_gguf import write_tiny_llama_gguf

torch.set_num_threads(2)


def test_byte_tokenizer_round_trips_text_and_has_chat_specials() -> None:
    tok = byte_tokenizer()
    text = "def f(x):\n    return x  # héllo ✓"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.encode())
    assert tok.decode(ids) == text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id != tok.pad_token_id
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # Special tokens in text are single tokens, so an EOS in a completion is one id.
    assert tok("<|im_end|>", add_special_tokens=False).input_ids == [tok.eos_token_id]


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_tiny_model_is_fast_deterministic_and_matches_vocab(architecture: str) -> None:
    tiny_model_and_tokenizer(architecture=architecture)  # first use pays the imports
    # CPU time of this thread, which other processes on a loaded machine do not inflate as they do
    # wall-clock time: building the tiny model is a few hundred milliseconds of work.
    started = time.thread_time()
    model, tok = tiny_model_and_tokenizer(architecture=architecture, seed=3)
    assert time.thread_time() - started < 2.0
    again, _ = tiny_model_and_tokenizer(architecture=architecture, seed=3)
    other, _ = tiny_model_and_tokenizer(architecture=architecture, seed=4)
    assert model.config.model_type == architecture
    assert model.config.vocab_size == len(tok)
    ids = tok("hello", return_tensors="pt", add_special_tokens=False).input_ids
    logits = model(ids).logits
    assert logits.shape == (1, 5, len(tok)) and torch.isfinite(logits).all()
    assert torch.equal(logits, again(ids).logits)
    assert not torch.equal(logits, other(ids).logits)
    assert not any(p.requires_grad for p in model.parameters())


def test_tiny_model_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_model_and_tokenizer(seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_names_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        tiny_model_and_tokenizer(architecture="gpt5")
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")
    with pytest.raises(ValueError, match="unknown built-in model 'builtin:nope'"):
        builtin_gguf_path("nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_base_model("/nonexistent/model.gguf")


def test_cached_checkpoint_builds_once_and_reuses(tmp_path: Path) -> None:
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "weights.bin").write_text("w")

    first = cached_checkpoint("m", {"v": 1}, build, root=tmp_path)
    second = cached_checkpoint("m", {"v": 1}, build, root=tmp_path)
    assert first == second == tmp_path / "m" and len(calls) == 1
    assert json.loads((first / SOURCE_RECORD).read_text()) == {"v": 1}
    # A changed source (e.g. a reinstalled package) rebuilds and replaces the cache.
    cached_checkpoint("m", {"v": 2}, build, root=tmp_path)
    assert len(calls) == 2
    assert json.loads((first / SOURCE_RECORD).read_text()) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["m"]


def test_interrupted_conversion_leaves_no_cache_and_keeps_the_old_one(tmp_path: Path) -> None:
    def broken(out: Path) -> None:
        (out / "half.bin").write_text("partial")
        raise KeyboardInterrupt  # e.g. the user pressed Ctrl-C mid-conversion

    with pytest.raises(KeyboardInterrupt):
        cached_checkpoint("m", {"v": 1}, broken, root=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []

    cached_checkpoint("m", {"v": 1}, lambda out: (out / "good.bin").write_text("g"), root=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cached_checkpoint("m", {"v": 2}, broken, root=tmp_path)
    assert (tmp_path / "m" / "good.bin").read_text() == "g"
    assert json.loads((tmp_path / "m" / SOURCE_RECORD).read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["m"]


def test_gguf_file_converts_exactly_and_loads_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFIRL_CACHE", str(tmp_path / "cache"))
    model, tok = tiny_model_and_tokenizer(initializer_range=0.2, seed=5)
    gguf_file = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(model, tok, gguf_file)

    loaded = load_base_model(gguf_file, dtype="float32")
    loaded_tok = load_tokenizer(str(gguf_file))
    caches = [p for p in (tmp_path / "cache" / "models").iterdir() if not p.name.startswith(".")]
    assert len(caches) == 1 and (caches[0] / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((caches[0] / "config.json").read_text())

    ids = torch.tensor([[40, 41, 42, 43, 44, 45]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    text = "<|im_start|>user\nsum(x)<|im_end|>\n"
    assert loaded_tok(text).input_ids == tok(text).input_ids
    assert loaded_tok.chat_template == tok.chat_template
    assert loaded_tok.eos_token == tok.eos_token

    # The second load reads the cache: the GGUF file is not parsed again.
    stamp = (caches[0] / SOURCE_RECORD).stat().st_mtime_ns
    load_base_model(gguf_file, dtype="float32")
    assert (caches[0] / SOURCE_RECORD).stat().st_mtime_ns == stamp


def test_local_directory_source_and_dtype(tmp_path: Path) -> None:
    model, tok = tiny_model_and_tokenizer()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = load_base_model(tmp_path, dtype="bf16")
    assert loaded.dtype == torch.bfloat16 and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert load_tokenizer(tmp_path).chat_template == tok.chat_template


def _lora_model(seed: int = 0, rank: int = 4):
    model, tok = tiny_model_and_tokenizer(seed=seed)
    return apply_lora(model, rank=rank, alpha=8, target_modules=["q_proj", "v_proj"]), tok


def test_apply_lora_trains_only_the_policy_adapter() -> None:
    model, _ = _lora_model()
    assert model.active_adapter == POLICY_ADAPTER
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n and f".{POLICY_ADAPTER}." in n for n in trainable)
    # 2 layers x (q, v) x (A, B)
    assert len(adapter_parameters(model)) == 8
    with pytest.raises(ValueError, match="LoRA rank must be >= 1"):
        apply_lora(tiny_model_and_tokenizer()[0], rank=0)


def test_adapter_state_round_trip_is_exact_and_copies() -> None:
    source, _ = _lora_model(seed=0)
    target, _ = _lora_model(seed=0)
    with torch.no_grad():
        for p in adapter_parameters(source).values():
            p.normal_()
    state = adapter_state_dict(source)
    assert all(".policy." not in k for k in state)
    load_adapter_state_dict(target, state)
    ids = torch.tensor([[10, 20, 30, 40]])
    assert torch.equal(source(input_ids=ids).logits, target(input_ids=ids).logits)
    assert all(torch.equal(state[k], v) for k, v in adapter_state_dict(target).items())
    # The state is a snapshot: training the source later does not change it.
    before = {k: v.clone() for k, v in state.items()}
    with torch.no_grad():
        for p in adapter_parameters(source).values():
            p.add_(1.0)
    assert all(torch.equal(before[k], state[k]) for k in state)


def test_load_adapter_state_rejects_mismatches_without_writing() -> None:
    model, _ = _lora_model(rank=4)
    original = adapter_state_dict(model)
    other_rank, _ = _lora_model(rank=2)
    with pytest.raises(ValueError, match="wrong shape"):
        load_adapter_state_dict(model, adapter_state_dict(other_rank))
    partial = dict(original)
    partial.pop(next(iter(partial)))
    partial["extra.lora_A.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="1 missing keys"):
        load_adapter_state_dict(model, partial)
    assert all(torch.equal(original[k], v) for k, v in adapter_state_dict(model).items())
    with pytest.raises(KeyError, match="no adapter 'critic'"):
        adapter_state_dict(model, "critic")
    with pytest.raises(TypeError, match="expected a PeftModel"):
        adapter_state_dict(tiny_model_and_tokenizer()[0])


def test_use_adapter_keeps_requires_grad_flags() -> None:
    model, _ = _lora_model()
    model.add_adapter("other", model.peft_config[POLICY_ADAPTER])
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with use_adapter(model, "other"):
        assert model.active_adapter == "other"
        assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.active_adapter == POLICY_ADAPTER
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_disabled_adapter_is_the_base_model() -> None:
    model, _ = _lora_model()
    base, _ = tiny_model_and_tokenizer(seed=0)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.normal_()
    ids = torch.tensor([[1, 50, 60, 70]])
    with model.disable_adapter():
        assert torch.equal(model(input_ids=ids).logits, base(ids).logits)
    assert not torch.equal(model(input_ids=ids).logits, base(ids).logits)


def test_each_device_rule_is_decided_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlhf.models.loading import resolve_device, use_bf16
    from rlhf.rollout import logprob_temperature

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cuda:1").index == 1
    assert not use_bf16(None, "auto") and not use_bf16(None, "cpu") and use_bf16(None, "cuda")
    assert use_bf16(True, "cpu") and not use_bf16(False, "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and use_bf16(None, "auto")
    # Greedy samples (temperature 0) are scored at temperature 1; others at their own.
    assert logprob_temperature(0.0) == 1.0 and logprob_temperature(0.7) == 0.7
