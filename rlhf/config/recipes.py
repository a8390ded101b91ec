"""The built-in recipes, shipped inside the package (``rlhf/recipes/*.yaml``), and how a recipe
argument becomes a file.

``effirl train RECIPE`` takes a path or a built-in recipe's name:

- a file that exists is that file;
- a bare name (``quickstart``) is the built-in recipe of that name, or its GPU variant
  (``quickstart_gpu``) when one exists and this machine has a CUDA GPU;
- a name with its suffix (``quickstart.yaml``), or a path into the ``recipes/`` folder of earlier
  checkouts (``recipes/quickstart.yaml``), is exactly that built-in recipe, GPU or not.

Recipes extend each other by relative path (``base: quickstart.yaml``), so they stay together in one
folder.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
from pathlib import Path

from rewards.console import notice
from rlhf.config.schema import ConfigError

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml")
GPU_VARIANT = "_gpu"
# Where recipes lived before they moved into the package; such paths still name the built-ins.
LEGACY_FOLDER = "recipes"


def recipes_dir() -> Path:
    """The folder holding the built-in recipes."""
    return Path(str(importlib.resources.files("rlhf") / "recipes"))


def builtin_recipes() -> dict[str, Path]:
    """Built-in recipe name (file stem) -> file, sorted by name."""
    folder = recipes_dir()
    found = [p for p in folder.iterdir() if p.suffix in SUFFIXES] if folder.is_dir() else []
    return {p.stem: p for p in sorted(found)}


def recipe_summary(path: Path) -> str:
    """The first sentence of a recipe's leading comment (what it is for)."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#") or (not text and words):
            break
        words += text.split()
    sentence = " ".join(words)
    end = sentence.find(". ")
    return sentence if end < 0 else sentence[: end + 1]


def gpu_available() -> bool:
    """Whether torch is installed and sees a CUDA GPU (without torch, no GPU can be used)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_recipe(recipe: str | Path, *, gpu: bool | None = None) -> Path:
    """The recipe file ``recipe`` names (see the module docstring); ConfigError when there is none.

    gpu: whether to take a bare name's GPU variant; None asks :func:`gpu_available`.
    """
    path = Path(recipe)
    if path.is_file():
        return path
    text = str(recipe)
    parts = path.parts
    legacy = len(parts) == 2 and parts[0] == LEGACY_FOLDER
    if len(parts) == 1 or legacy:
        name, exact = path.stem, path.suffix in SUFFIXES
        known = builtin_recipes()
        if (path.suffix in ("", *SUFFIXES)) and name in known:
            variant = name + GPU_VARIANT
            if not exact and variant in known and (gpu_available() if gpu is None else gpu):
                notice(
                    log,
                    "recipe %s: a GPU is present, so the built-in %s.yaml (%s.yaml picks the CPU one)",
                    name,
                    variant,
                    name,
                )
                return known[variant]
            return known[name]
    if len(parts) > 1 and not legacy:  # a path, not a name
        raise ConfigError(f"recipe not found: {text}" + ("" if path.suffix else " (did you forget `.yaml`?)"))
    raise ConfigError(
        f"recipe not found: {text}; give a recipe file or the name of a built-in recipe: "
        f"{', '.join(builtin_recipes())} (`effirl config recipes` describes them)"
    )
