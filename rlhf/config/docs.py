"""The configuration reference (docs/config.md), rendered from the config dataclasses.

The committed docs are checked against :func:`render_config_docs` by a test, so they cannot drift
from the code; regenerate them with ``python scripts/gen_config_docs.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Literal, get_args, get_origin

import yaml

from rlhf.config.experiment import ExperimentConfig, section_types, top_level_fields
from rlhf.config.loading import RecipeDumper
from rlhf.config.schema import describe_type, field_default, field_help, is_union, type_hints

_INTRO = """\
# Configuration reference

<!-- Generated from rlhf/config by scripts/gen_config_docs.py; edit the dataclasses, not this file. -->

A run is configured by a YAML recipe plus `key=value` overrides on the command line:

```bash
effirl train quickstart rollout.n_samples=8 lora.target_modules=[q_proj,v_proj]
effirl config show quickstart train.steps=5   # print the resolved config
effirl config recipes                         # the built-in recipes
```

- A recipe is a file, or the name of a recipe that ships with effirl (`quickstart`, `smoke`, ...;
  `effirl config recipes` lists them). A bare name takes the recipe's GPU variant (`quickstart_gpu`)
  when a CUDA GPU is present; `quickstart.yaml` is always that file.
- A recipe is a mapping of the sections below (`rollout: {n_samples: 8}`) and top-level keys; keys it
  leaves out take the defaults listed here.
- `base: other.yaml` (or a list of files; `defaults:` means the same) makes a recipe extend others,
  given relative to the recipe's own directory. Bases are merged first, in order; the recipe's own
  keys win, section by section and key by key. Lists replace, they do not append.
- Overrides use dotted keys (`rollout.temperature=0.7`) and are applied last. Values are read as YAML:
  `[a, b]` is a list and `null` unsets an optional key; text given for a string key stays text.
- YAML is read the YAML 1.2 way: only `true`/`false` are booleans and `1e-5` is a number.
- Unknown keys, wrong types and out-of-range values are errors that name the key, e.g.
  ``unknown key `rollout.temprature`; did you mean `rollout.temperature`?``.
- Keys match names in code: `rollout.n_samples` is `RolloutConfig.n_samples` in `rlhf.config`.

Special model names (`model.name_or_path`): `builtin:<name>` loads a model shipped as a Python
package (`builtin:smollm2-135m-instruct`, the default); `tiny:<architecture>` (e.g. `tiny:llama`)
builds a tiny randomly initialised model from a config, for tests and smoke runs.
"""


def render_config_docs() -> str:
    """Markdown reference of every key: per section, its key, type, default and help text."""
    parts = [_INTRO]
    parts.append(_render_section("Top-level keys", "", ExperimentConfig, top_level_fields()))
    for name, cls in section_types().items():
        parts.append(_render_section(f"`{name}`: {cls.__name__}", name, cls, list(dataclasses.fields(cls))))
    return "\n".join(parts)


def _render_section(title: str, prefix: str, cls: type, fields: list[dataclasses.Field[Any]]) -> str:
    hints = type_hints(cls)
    lines = [f"## {title}", "", inspect.cleandoc(cls.__doc__ or ""), ""]
    lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for f in fields:
        key = f"{prefix}.{f.name}" if prefix else f.name
        cells = [
            f"`{key}`",
            _render_type(hints[f.name]),
            f"`{_render_default(field_default(f))}`",
            field_help(f),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _render_type(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " / ".join(f"`{v}`" for v in get_args(tp))
    if is_union(tp):
        return " or ".join(_render_type(m) for m in get_args(tp))
    return describe_type(tp)


def _render_default(value: Any) -> str:
    text = yaml.dump(value, Dumper=RecipeDumper, default_flow_style=True, width=1000)
    return text.removesuffix("\n").removesuffix("\n...").strip()
