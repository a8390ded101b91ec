"""Request bodies of the reward service, checked field by field.

Every check failure raises :class:`RequestError` with the JSON path of the field at fault, what was
expected, what came, and an example of a valid value, so a client can fix the request from the
message alone.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from rewards.settings import (
    PLACEMENT_KEYS,
    SCORING_KEYS,
    RewardSettings,
    SettingError,
)
from sandbox import codec

MISSING: Any = object()
SUPPORTED_LANGUAGES = ("python", "python3")


class RequestError(Exception):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class Submission:
    """One piece of code to check. ``expected[i]`` is MISSING where the reference must supply it.

    ``perf_inputs``/``perf_expected``: the perf tests (cost is measured on them only, after the
    tests pass), in the same form.
    """

    id: str
    code: str
    entry_point: str
    inputs: list[list[Any]]
    expected: list[Any]
    reference: str | None
    atol: float | None
    perf_inputs: list[list[Any]] = field(default_factory=list)
    perf_expected: list[Any] = field(default_factory=list)

    @property
    def needs_reference_outputs(self) -> bool:
        return any(value is MISSING for value in (*self.expected, *self.perf_expected))


@dataclass(frozen=True)
class EvaluateRequest:
    submissions: list[Submission]
    repeats: int | None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreItem:
    task_id: str
    completion: str
    group: int | str | None


@dataclass(frozen=True)
class ScoreRequest:
    dataset: str
    split: str | None
    items: list[ScoreItem]
    settings: dict[str, Any] = field(default_factory=dict)
    extract: bool = True


@dataclass(frozen=True)
class RunCodeRequest:
    """SandboxFusion's ``/run_code`` request, the fields effirl honours."""

    code: str
    language: str
    stdin: str
    run_timeout: float | None
    memory_limit_mb: int | None
    files: dict[str, str]


def decode_json(body: bytes) -> Any:
    """Parse a request body; bare NaN/Infinity are refused (tag them, see docs/reward_service.md)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"the request body is not UTF-8 text ({exc}); send JSON encoded as UTF-8"
        ) from None
    if not text.strip():
        raise RequestError("the request body is empty; send a JSON object (Content-Type: application/json)")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _reject_constant(name: str) -> Any:
    raise RequestError(
        f'bare {name} is not valid JSON; encode non-finite floats as {{"__float__": "nan"}}, '
        '{"__float__": "inf"} or {"__float__": "-inf"}'
    )


# ------------------------------------------------------------------------------------ field checks


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _object(value: Any, where: str, example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"`{where}` must be a JSON object, got {_type_name(value)}; e.g. {example}")
    return value


def _required(data: dict[str, Any], key: str, where: str, example: str) -> Any:
    if key not in data:
        raise RequestError(
            f"`{where}.{key}` is missing; e.g. {example}" if where else f"`{key}` is missing; e.g. {example}"
        )
    return data[key]


def _string(value: Any, where: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise RequestError(f"`{where}` must be a string, got {_type_name(value)}")
    if not allow_empty and not value.strip():
        raise RequestError(f"`{where}` must not be empty")
    return value


def _number(value: Any, where: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"`{where}` must be a finite number, got {_type_name(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RequestError(f"`{where}` must be between {low} and {high}, got {value}")
    return float(value)


def _integer(value: Any, where: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"`{where}` must be an integer, got {_type_name(value)}")
    if not low <= value <= high:
        raise RequestError(f"`{where}` must be between {low} and {high}, got {value}")
    return value


def _array(value: Any, where: str, example: str, *, max_items: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise RequestError(f"`{where}` must be an array, got {_type_name(value)}; e.g. {example}")
    if not value:
        raise RequestError(f"`{where}` is empty; send at least one item, e.g. {example}")
    if max_items is not None and len(value) > max_items:
        raise RequestError(
            f"`{where}` has {len(value)} items, over this service's limit of {max_items} per request; "
            "split them over several requests",
            status=413,
        )
    return value


def _unknown_keys(data: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = sorted(set(data) - set(known))
    if extra:
        label = f"`{where}`" if where else "the request"
        raise RequestError(
            f"{label} has unknown field(s) {', '.join(extra)}; known fields: {', '.join(known)}"
        )


def _tagged(value: Any, where: str) -> Any:
    try:
        return codec.from_jsonable(value)
    except codec.DecodeError as exc:
        raise RequestError(
            f"`{where}` is not valid tagged JSON: {exc} (see docs/reward_service.md)"
        ) from None


# ------------------------------------------------------------------------------------ /v1/evaluate

_SUBMISSION_EXAMPLE = (
    '{"id": "a", "code": "def add(x, y): return x + y", "entry_point": "add", '
    '"tests": [{"input": [1, 2], "expected": 3}]}'
)
_SUBMISSION_KEYS = ("id", "code", "entry_point", "tests", "perf_tests", "reference", "atol")


def parse_evaluate(data: Any, *, max_submissions: int, max_repeats: int) -> EvaluateRequest:
    data = _object(data, "request", '{"submissions": [' + _SUBMISSION_EXAMPLE + "]}")
    _unknown_keys(data, ("submissions", "repeats", "settings"), "")
    items = _array(
        _required(data, "submissions", "", '{"submissions": [' + _SUBMISSION_EXAMPLE + "]}"),
        "submissions",
        "[" + _SUBMISSION_EXAMPLE + "]",
        max_items=max_submissions,
    )
    repeats = data.get("repeats")
    if repeats is not None:
        repeats = _integer(repeats, "repeats", low=1, high=max_repeats)
    settings = _settings_object(data.get("settings"))
    if repeats is not None and settings.get("repeats", repeats) != repeats:
        raise RequestError(
            f"`repeats` ({repeats}) and `settings.repeats` ({settings['repeats']}) disagree; send one of them"
        )
    submissions = [_submission(item, f"submissions[{i}]") for i, item in enumerate(items)]
    return EvaluateRequest(submissions, repeats, settings)


def _submission(value: Any, where: str) -> Submission:
    data = _object(value, where, _SUBMISSION_EXAMPLE)
    _unknown_keys(data, _SUBMISSION_KEYS, where)
    ident = _string(_required(data, "id", where, _SUBMISSION_EXAMPLE), f"{where}.id")
    code = _string(_required(data, "code", where, _SUBMISSION_EXAMPLE), f"{where}.code")
    entry_point = _string(_required(data, "entry_point", where, _SUBMISSION_EXAMPLE), f"{where}.entry_point")
    if not entry_point.isidentifier():
        raise RequestError(f"`{where}.entry_point` must be a Python function name, got {entry_point!r}")
    tests = _array(
        _required(data, "tests", where, _SUBMISSION_EXAMPLE),
        f"{where}.tests",
        '[{"input": [1, 2], "expected": 3}]',
    )
    reference = data.get("reference")
    if reference is not None:
        reference = _string(reference, f"{where}.reference", allow_empty=False)
    atol = data.get("atol")
    if atol is not None:
        atol = _number(atol, f"{where}.atol", low=0.0)
    inputs, expected = _tests(tests, f"{where}.tests", where, reference)
    perf_inputs: list[list[Any]] = []
    perf_expected: list[Any] = []
    if data.get("perf_tests") is not None:
        perf_tests = _array(data["perf_tests"], f"{where}.perf_tests", '[{"input": [100000], "expected": 1}]')
        perf_inputs, perf_expected = _tests(perf_tests, f"{where}.perf_tests", where, reference)
    return Submission(ident, code, entry_point, inputs, expected, reference, atol, perf_inputs, perf_expected)


def _tests(
    tests: list[Any], at_list: str, where: str, reference: str | None
) -> tuple[list[list[Any]], list[Any]]:
    """The inputs and expected values (MISSING where the reference must supply them) of a test list."""
    inputs, expected = [], []
    for index, test in enumerate(tests):
        at = f"{at_list}[{index}]"
        test = _object(test, at, '{"input": [1, 2], "expected": 3}')
        _unknown_keys(test, ("input", "expected"), at)
        args = _tagged(_required(test, "input", at, '{"input": [1, 2], "expected": 3}'), f"{at}.input")
        if not isinstance(args, (list, tuple)):
            raise RequestError(
                f"`{at}.input` must be an array of the positional arguments, got {_type_name(args)}; "
                'a function of one list argument takes e.g. {"input": [[1, 2, 3]]}'
            )
        inputs.append(list(args))
        if "expected" in test:
            expected.append(_tagged(test["expected"], f"{at}.expected"))
        elif reference is None:
            raise RequestError(
                f"`{at}.expected` is missing and `{where}` has no `reference`; give the expected value or "
                "a reference solution that computes it"
            )
        else:
            expected.append(MISSING)
    return inputs, expected


# --------------------------------------------------------------------------------------- /v1/score

_ITEM_EXAMPLE = '{"task_id": "HumanEval/0", "completion": "```python\\n...\\n```", "group": 0}'


def parse_score(data: Any, *, max_items: int) -> ScoreRequest:
    example = '{"dataset": "humanevalplus", "items": [' + _ITEM_EXAMPLE + "]}"
    data = _object(data, "request", example)
    _unknown_keys(data, ("dataset", "split", "items", "settings", "extract"), "")
    dataset = _string(_required(data, "dataset", "", example), "dataset", allow_empty=False)
    split = data.get("split")
    if split is not None:
        split = _string(split, "split", allow_empty=False)
    items = _array(
        _required(data, "items", "", example), "items", "[" + _ITEM_EXAMPLE + "]", max_items=max_items
    )
    parsed = []
    for index, item in enumerate(items):
        at = f"items[{index}]"
        item = _object(item, at, _ITEM_EXAMPLE)
        _unknown_keys(item, ("task_id", "completion", "group"), at)
        task_id = _string(_required(item, "task_id", at, _ITEM_EXAMPLE), f"{at}.task_id", allow_empty=False)
        completion = _string(_required(item, "completion", at, _ITEM_EXAMPLE), f"{at}.completion")
        group = item.get("group")
        if group is not None and (isinstance(group, bool) or not isinstance(group, (int, str))):
            raise RequestError(f"`{at}.group` must be an integer or a string, got {_type_name(group)}")
        parsed.append(ScoreItem(task_id, completion, group))
    extract = data.get("extract", True)
    if not isinstance(extract, bool):
        raise RequestError(f"`extract` must be true or false, got {_type_name(extract)}")
    return ScoreRequest(dataset, split, parsed, _settings_object(data.get("settings")), extract)


# ---------------------------------------------------------------------------------- reward settings

# What a service does with each execution key (rewards.settings.EXECUTION_KEYS) a request sets: keys
# its sandbox fixes must match its own; per-run keys are honoured up to a limit (the flag raising it).
FIXED_BY_SANDBOX = ("cost_measure", "memory_mb")
# Trust a request may narrow but never widen: a service started without assertion scripts refuses
# a request that asks for them.
OPT_IN_BY_SERVICE = ("allow_script_tests",)
HONOURED_UP_TO = {"repeats": "--max-repeats", "timeout_s": "--max-run-timeout-s"}
# Honoured as sent: they only shorten a run's limit below timeout_s.
HONOURED = ("timeout_factor", "min_timeout_s")


def _settings_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return dict(_object(value, "settings", '{"efficiency_weight": 1.0, "cost_measure": "cpu"}'))


def request_settings(
    requested: dict[str, Any], *, served: RewardSettings, max_repeats: int, max_timeout_s: float
) -> RewardSettings:
    """The settings a request is scored with: the service's, changed by the request's ``settings``.

    Shaping keys are applied as given. Execution keys are honoured where this service can run that
    way (``repeats`` and ``timeout_s`` within its limits) and refused with 409 where it cannot
    (another ``cost_measure`` or ``memory_mb`` than its sandbox's): never replaced by its own values.
    A bad value is refused with 400. Keys the request leaves out take the service's values; the
    response's ``settings`` says what was used.
    """
    for key in requested:
        if key in PLACEMENT_KEYS:
            raise RequestError(
                f"`settings.{key}` says where the caller scores and changes no reward; leave it out "
                "(send the keys of RewardSettings.scoring_dict())"
            )
        if key not in SCORING_KEYS:
            close = difflib.get_close_matches(key, SCORING_KEYS, n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"known: {', '.join(SCORING_KEYS)}"
            raise RequestError(f"`settings` has an unknown key `{key}`; {hint}")
    if not requested:
        return served
    try:
        settings = served.replace(**requested)
    except SettingError as exc:
        raise RequestError(f"`settings.{exc.key}` {exc.problem}, got {requested.get(exc.key)!r}") from None
    for key in FIXED_BY_SANDBOX:
        asked, own = getattr(settings, key), getattr(served, key)
        if asked != own:
            raise RequestError(
                f"`settings.{key}` is {asked} but this service runs code with {key} {own} and cannot "
                f"change it per request; start the service with --{key.replace('_', '-')} {asked}",
                status=409,
            )
    for key in OPT_IN_BY_SERVICE:
        if getattr(settings, key) and not getattr(served, key):
            raise RequestError(
                f"`settings.{key}` asks for a weaker trust level than this service allows; a request "
                f"cannot turn it on: start the service with --{key.replace('_', '-')} (docs/sandbox.md)",
                status=409,
            )
    limits = {"repeats": max_repeats, "timeout_s": max_timeout_s}
    for key, flag in HONOURED_UP_TO.items():
        asked = getattr(settings, key)
        if asked > limits[key]:
            raise RequestError(
                f"`settings.{key}` is {asked}, over this service's limit of {limits[key]:g}; start the "
                f"service with {flag} {asked:g}",
                status=409,
            )
    return settings


# ---------------------------------------------------------------------------------------- /run_code

_RUN_CODE_KEYS = (
    "code",
    "language",
    "stdin",
    "run_timeout",
    "compile_timeout",
    "memory_limit_MB",
    "files",
    "fetch_files",
    "args",
)


def parse_run_code(data: Any, *, max_timeout_s: float) -> RunCodeRequest:
    example = '{"code": "print(input())", "language": "python", "stdin": "hi"}'
    data = _object(data, "request", example)
    _unknown_keys(data, _RUN_CODE_KEYS, "")
    code = _string(_required(data, "code", "", example), "code")
    language = _string(_required(data, "language", "", example), "language")
    if language not in SUPPORTED_LANGUAGES:
        raise RequestError(
            f"language {language!r} is not supported: effirl runs Python only "
            f"(`language` one of {', '.join(SUPPORTED_LANGUAGES)}); "
            "use SandboxFusion itself for other languages"
        )
    stdin = data.get("stdin")
    stdin = "" if stdin is None else _string(stdin, "stdin")
    run_timeout = data.get("run_timeout")
    if run_timeout is not None:
        run_timeout = _number(run_timeout, "run_timeout", low=0.001, high=max_timeout_s)
    if data.get("compile_timeout") is not None:
        _number(data["compile_timeout"], "compile_timeout", low=0.0)
    memory = data.get("memory_limit_MB")
    if memory is not None:
        memory = _integer(memory, "memory_limit_MB", low=-1, high=1 << 30)
    files = data.get("files") or {}
    _object(files, "files", '{"data.txt": "aGVsbG8="}')
    for path, content in files.items():
        if content is not None and not isinstance(content, str):
            raise RequestError(f"`files[{path!r}]` must be base64 text or null, got {_type_name(content)}")
    if data.get("fetch_files"):
        raise RequestError(
            "`fetch_files` is not supported by effirl: candidates cannot write files that outlive a run"
        )
    if data.get("args"):
        raise RequestError("`args` (pytest arguments) is not supported by effirl; run plain python programs")
    return RunCodeRequest(code, language, stdin, run_timeout, memory, {k: v or "" for k, v in files.items()})
