"""The machinery under the config sections: documented fields, type checks and value checks.

Every section is a dataclass whose fields are declared with :func:`setting` (a default plus a help
text the docs generator reads). :class:`Section` checks each field against its annotation when the
section is built, so a config built from Python and one loaded from YAML fail the same way, with an
error that names the dotted key (``rollout.top_p``), what was expected and what was given.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from rewards.user_error import UserError


class ConfigError(UserError, ValueError):
    """A configuration problem the user can fix; the message names the key and the fix.

    key: the dotted key at fault (``rollout.n_samples``), or None when the problem is not one key's.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def setting(default: Any, help: str) -> Any:
    """A documented dataclass field. Mutable defaults (lists) are copied for every instance."""
    metadata = {"help": " ".join(help.split())}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_help(f: dataclasses.Field[Any]) -> str:
    """The help text of a field declared with :func:`setting`."""
    return str(f.metadata.get("help", ""))


def field_default(f: dataclasses.Field[Any]) -> Any:
    """The default value of a field (calling its factory when it has one)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations of a dataclass (its modules use ``from __future__ import annotations``)."""
    return get_type_hints(cls)


def is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def describe_type(tp: Any) -> str:
    """A short human name for an annotation: ``int``, ``list[str]``, ``str or null``, ``one of a, b``."""
    if tp is type(None):
        return "null"
    if is_union(tp):
        return " or ".join(describe_type(member) for member in get_args(tp))
    if get_origin(tp) is Literal:
        values = [str(v) for v in get_args(tp)]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        return f"list[{describe_type(item)}]"
    return getattr(tp, "__name__", str(tp))


def show_value(value: Any) -> str:
    """A value as it appears in an error message, with its YAML type: ``'eight' (str)``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (bool)"
    return f"{value!r} ({type(value).__name__})"


def admits(tp: Any, value: Any) -> bool:
    """Whether ``value`` has the type ``tp`` describes (ints count as floats; bools are not ints)."""
    try:
        coerce(value, tp, "")
    except ConfigError:
        return False
    return True


def admits_str(tp: Any) -> bool:
    """Whether a free-form string is a valid shape for ``tp`` (used to keep override text as text)."""
    if tp is str:
        return True
    if is_union(tp):
        return any(admits_str(member) for member in get_args(tp))
    return False


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against annotation ``tp``; ints become floats where a float is expected.

    Raises ConfigError naming ``key``, the expected type and the given value.
    """
    if is_union(tp):
        for member in get_args(tp):
            try:
                return coerce(value, member, key)
            except ConfigError:
                continue
        # A list for a `... | list[str]` key: the error about its bad item says more than the union.
        if isinstance(value, (list, tuple)):
            for member in get_args(tp):
                if get_origin(member) is list:
                    return coerce(value, member, key)
        literal_choices = [v for m in get_args(tp) if get_origin(m) is Literal for v in get_args(m)]
        if literal_choices and isinstance(value, str):
            others = [describe_type(m) for m in get_args(tp) if get_origin(m) is not Literal]
            raise ConfigError(_choice_message(key, value, literal_choices, others), key)
        raise ConfigError(f"`{key}` expects {describe_type(tp)}, got {show_value(value)}", key)
    if tp is type(None):
        if value is None:
            return None
    elif get_origin(tp) is Literal:
        if value in get_args(tp) and isinstance(value, str):
            return value
        if isinstance(value, str):
            raise ConfigError(_choice_message(key, value, list(get_args(tp))), key)
    elif get_origin(tp) is list:
        if isinstance(value, (list, tuple)):
            (item,) = get_args(tp)
            return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"`{key}` expects {describe_type(tp)}, got {show_value(value)}", key)


def _choice_message(key: str, value: str, choices: Sequence[Any], others: Sequence[str] = ()) -> str:
    shown = ", ".join(str(c) for c in choices)
    message = f"`{key}` must be one of {shown}" + "".join(f" (or {o})" for o in others) + f"; got {value!r}"
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6)
    return message + (f"; did you mean `{close[0]}`?" if close else "")


def key_of(section: Section, name: str) -> str:
    """The dotted key of field ``name`` of ``section`` (top-level fields have no prefix)."""
    return f"{section.section}.{name}" if section.section else name


class Section:
    """Base of every config section: checks field types, then the section's own value rules.

    Subclasses are dataclasses; ``section`` is their key in the experiment config (``rollout``);
    they override :meth:`check_values` for rules beyond types (ranges, cross-field constraints).
    """

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raises ConfigError naming the first bad key. Call again after mutating."""
        hints = type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = coerce(getattr(self, f.name), hints[f.name], key_of(self, f.name))
            object.__setattr__(self, f.name, value)
        self.check_values()

    def check_values(self) -> None:
        """Rules beyond types; subclasses override."""

    # The rules below raise ConfigError naming the key; None passes (optional fields are unset).

    def fail(self, name: str, problem: str) -> typing.NoReturn:
        """Raise a ConfigError about field ``name``: "`rollout.top_p` must be in (0, 1]; got 1.5"."""
        value = getattr(self, name)
        raise ConfigError(f"`{key_of(self, name)}` {problem}; got {show_value(value)}", key_of(self, name))

    def require_choice(self, name: str, choices: Sequence[str]) -> None:
        """The value is one of ``choices`` (names a registry holds, so no Literal can list them)."""
        value = getattr(self, name)
        if value is not None and value not in choices:
            raise ConfigError(_choice_message(key_of(self, name), value, choices), key_of(self, name))

    def require_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and not value > 0:
                self.fail(name, "must be > 0")

    def require_non_negative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and not value >= 0:
                self.fail(name, "must be >= 0")

    def require_at_most_zero(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and not value <= 0:
                self.fail(name, "must be <= 0 (a penalty is added to the reward)")

    def require_range(
        self, name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
    ) -> None:
        value = getattr(self, name)
        if value is None:
            return
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            self.fail(name, f"must be in {interval}")


def section_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a section class, in declaration order."""
    return list(dataclasses.fields(cls))  # type: ignore[arg-type]
