"""Recipes in, resolved configs out: YAML recipes with inheritance, dotted-key overrides, YAML dumps.

A recipe is a YAML mapping of sections (``rollout: {n_samples: 8}``) and top-level keys; keys it leaves
out take their defaults. ``base: other.yaml`` (or a list of files; ``defaults:`` is a synonym) makes a
recipe extend others: their keys are merged first, in order, and the recipe's own keys win. Overrides
``rollout.n_samples=8`` are applied last, values parsed as YAML scalars or flow lists.

YAML here is read the YAML 1.2 way: only ``true``/``false`` are booleans (``no`` and ``on`` stay
strings) and ``1e-5`` is a float.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rlhf.config.experiment import ExperimentConfig, section_types, top_level_fields
from rlhf.config.recipes import resolve_recipe
from rlhf.config.schema import ConfigError, admits, admits_str, show_value, type_hints

BASE_KEYS = ("base", "defaults")

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _yaml_1_2_resolvers(cls: type[yaml.resolver.BaseResolver]) -> None:
    """Make ``cls`` resolve booleans and floats as YAML 1.2 does (shared by the loader and dumper)."""
    cls.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    cls.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    cls.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))


class RecipeLoader(yaml.SafeLoader):
    """Safe YAML loader with YAML 1.2 booleans and floats that rejects duplicate mapping keys."""


class RecipeDumper(yaml.SafeDumper):
    """Safe YAML dumper that quotes the strings :class:`RecipeLoader` would not read back as strings."""


def _construct_mapping(loader: RecipeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (the later one would silently win)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_yaml_1_2_resolvers(RecipeLoader)
_yaml_1_2_resolvers(RecipeDumper)
RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The resolved config of recipe ``path`` (None: the defaults) with ``overrides`` applied.

    path: a recipe file, or a built-in recipe's name (``quickstart``; see rlhf/config/recipes.py).

    overrides: ``key=value`` strings with dotted keys, e.g. ``rollout.n_samples=8``,
        ``lora.target_modules=[q_proj,v_proj]``, ``data.limit=null``.
    Raises ConfigError naming the file or override, the key and the fix.
    """
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        display, path = str(path), Path(path)
        if not path.is_file():
            path = resolve_recipe(path)
            display = path.name  # a built-in recipe: errors name its file, not a path into the package
        data, sources = _read_recipe(path, display=display, chain=())
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
        sources[key] = f"override `{text}`"
    if "run_name" not in data:
        data["run_name"] = Path(path).stem if path is not None else "run"
    return config_from_dict(data, sources=sources)


def parse_override(text: str) -> tuple[str, Any]:
    """``"rollout.n_samples=8"`` -> ``("rollout.n_samples", 8)``, the value typed for its key.

    Text meant for a string key stays text even when YAML would read it otherwise
    (``run_name=2024`` is the string ``"2024"``); ``null`` unsets an optional key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override `{text}` must look like key=value, e.g. rollout.n_samples=8")
    annotation = _annotation_of(key, where="")
    try:
        value = yaml.load(raw, Loader=RecipeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse the value of override `{text}`: {_yaml_problem(exc)}", key) from None
    quoted = raw.strip()[:1] in ("'", '"')
    if (
        not quoted
        and value is not None
        and not isinstance(value, (str, list))
        and admits_str(annotation)
        and not admits(annotation, value)
    ):
        value = raw
    return key, value


def config_from_dict(
    data: Mapping[str, Any], *, sources: Mapping[str, str] | None = None
) -> ExperimentConfig:
    """Build and validate an ExperimentConfig from nested plain data (as a recipe file holds).

    sources: dotted key -> where it was set (a file, an override); named in errors about that key.
    """
    sources = sources or {}
    _check_keys(data, where="")
    sections = {}
    try:
        for name, cls in section_types().items():
            sections[name] = cls(**dict(data.get(name) or {}))
        top = {k: v for k, v in data.items() if k not in sections}
        return ExperimentConfig(**top, **sections)
    except ConfigError as exc:
        if exc.key is not None and exc.key.split("[")[0] in sources:
            raise ConfigError(f"{exc} (from {sources[exc.key.split('[')[0]]})", exc.key) from None
        raise


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The config as nested plain data, sections in declaration order."""
    return dataclasses.asdict(config)


def dump_config(config: ExperimentConfig) -> str:
    """YAML of the fully resolved config; :func:`load_config` reads it back to an equal config."""
    return yaml.dump(
        config_to_dict(config), Dumper=RecipeDumper, sort_keys=False, default_flow_style=False, width=100
    )


def known_keys() -> list[str]:
    """Every settable dotted key: top-level keys, section names and ``section.field`` keys."""
    keys = [f.name for f in top_level_fields()]
    for name, cls in section_types().items():
        keys.append(name)
        keys.extend(f"{name}.{f.name}" for f in dataclasses.fields(cls))
    return keys


def _read_recipe(
    path: Path, *, display: str, chain: tuple[Path, ...]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged data of recipe ``path`` and its bases, and which file set each dotted key."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{display}: recipes extend each other in a cycle: {cycle}")
    if not path.is_file():
        raise ConfigError(
            f"recipe not found: {display}" + ("" if path.suffix else " (did you forget `.yaml`?)")
        )
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=RecipeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{display}: invalid YAML: {_yaml_problem(exc)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{display}: a recipe must be a mapping of keys, got {show_value(raw)}")

    bases = [raw.pop(k) for k in BASE_KEYS if k in raw]
    if len(bases) > 1:
        raise ConfigError(f"{display}: use either `base` or `defaults`, not both")
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for base in _as_base_list(bases[0] if bases else [], display):
        base_path = path.parent / base
        base_data, base_sources = _read_recipe(base_path, display=str(base_path), chain=(*chain, resolved))
        _merge(data, base_data)
        sources.update(base_sources)
    _check_keys(raw, where=f"{display}: ")
    _merge(data, raw)
    sources.update({key: display for key in _dotted_keys(raw)})
    return data, sources


def _as_base_list(value: Any, display: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise ConfigError(
            f"{display}: `base` must be a recipe path or a list of them, got {show_value(value)}"
        )
    return values


def _check_keys(data: Mapping[str, Any], *, where: str) -> None:
    """Raise ConfigError for the first key that is not a config key, suggesting close matches."""
    sections = section_types()
    top = {f.name for f in top_level_fields()}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}keys must be strings, got {show_value(key)}")
        if key in sections:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{where}`{key}` is a section and must be a mapping of its keys, got {show_value(value)}",
                    key,
                )
            fields = {f.name for f in dataclasses.fields(sections[key])}
            for sub in value:
                if sub not in fields:
                    raise ConfigError(f"{where}{_unknown_key_message(f'{key}.{sub}')}", f"{key}.{sub}")
        elif key not in top:
            raise ConfigError(f"{where}{_unknown_key_message(key)}", key)


def _unknown_key_message(key: str) -> str:
    """``unknown key `rollout.temprature`; did you mean `rollout.temperature`?``"""
    message = f"unknown key `{key}`"
    suggestions = [f"`{s}`" for s in _suggestions(key)]
    if suggestions:
        listed = (
            suggestions[0]
            if len(suggestions) == 1
            else ", ".join(suggestions[:-1]) + " or " + suggestions[-1]
        )
        return f"{message}; did you mean {listed}?"
    sections = section_types()
    head = key.rpartition(".")[0]
    if head in sections:
        valid = ", ".join(f.name for f in dataclasses.fields(sections[head]))
        return f"{message}; the keys of `{head}` are: {valid}"
    top = ", ".join(f.name for f in top_level_fields())
    return f"{message}; sections are {', '.join(sections)} and top-level keys are {top}"


def _suggestions(key: str) -> list[str]:
    """Known keys the user probably meant by ``key``, best first."""
    known = known_keys()
    head, _, leaf = key.rpartition(".")
    # The right name in the wrong place (`train.temperature`, top-level `n_samples`).
    moved = [k for k in known if k.rpartition(".")[2] == leaf and k != key]
    if moved:
        return moved[:3]
    sections = section_types()
    if head in sections:
        return [f"{head}.{m}" for m in _close(leaf, [f.name for f in dataclasses.fields(sections[head])])]
    if head:
        # A misspelt section: fix it, then the key within it.
        fixed = _close(head, list(sections))
        if fixed:
            corrected = f"{fixed[0]}.{leaf}"
            return [corrected] if corrected in known else _suggestions(corrected)
        return []
    by_leaf = {k.rpartition(".")[2]: k for k in reversed(known)}
    return [by_leaf[m] for m in _close(leaf, list(by_leaf))]


def _close(word: str, options: list[str]) -> list[str]:
    """Options similar to ``word``: at most three, all nearly as close as the best."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, word, option).ratio(), option) for option in options), reverse=True
    )
    if not scored or scored[0][0] < 0.6:
        return []
    return [option for ratio, option in scored[:3] if ratio >= max(0.6, scored[0][0] - 0.05)]


def _annotation_of(key: str, *, where: str) -> Any:
    """The type annotation of dotted ``key``; ConfigError when the key does not exist."""
    sections = section_types()
    head, _, tail = key.partition(".")
    if head in sections and tail:
        hints = type_hints(sections[head])
        if tail in hints:
            return hints[tail]
    elif not tail and head in {f.name for f in top_level_fields()}:
        return type_hints(ExperimentConfig)[head]
    elif head in sections:
        raise ConfigError(f"{where}`{key}` is a section; set its keys, e.g. `{head}.<key>=value`", key)
    raise ConfigError(f"{where}{_unknown_key_message(key)}", key)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    head, _, tail = key.partition(".")
    if not tail:
        data[head] = value
        return
    section = data.get(head)
    data[head] = section = dict(section) if isinstance(section, Mapping) else {}
    section[tail] = value


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Merge ``update`` into ``into``: sections merge key by key; everything else (lists too) replaces."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), Mapping):
            merged = dict(into[key])
            _merge(merged, value)
            into[key] = merged
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _dotted_keys(data: Mapping[str, Any]) -> list[str]:
    keys = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            keys.extend(f"{key}.{sub}" for sub in value)
        else:
            keys.append(key)
    return keys


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A one-line description of a YAML error with its line number."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} (line {mark.line + 1})" if mark is not None else str(problem)
