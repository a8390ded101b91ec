"""Pull the Python solution out of a model's completion.

Small models wrap code in chat: a preamble ("Sure! Here is..."), one or more markdown fences
(```python, ```py, bare ```, ~~~), an explanation after, example calls, and sometimes the
length limit cuts them off inside a fence. The prompt may also end inside the code (a prefill such
as "```python\\ndef f(x):"), so the completion only continues the body; pass it as ``prefix``.

What is extracted, in order of preference:
1. a fenced block that defines the entry point (the first such block that parses, else the first);
2. otherwise the first fenced block that looks like Python (tagged python/py, or parses with a
   ``def``/``import``/``class``), else the longest fenced block;
3. with no fence at all, the longest stretch of lines, starting at the first code-looking line,
   that parses as Python (prose before and after is dropped).
The chosen code is then cleaned: top-level statements that call the entry point (``print(f(3))``,
``assert f(1) == 2``) and ``if __name__ == "__main__":`` blocks are removed so that example usage
neither costs time nor fails the load; a block cut off mid-statement is trimmed back to the
longest prefix that parses.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

PYTHON_TAGS = frozenset({"python", "py", "python3", "py3", "pycon", "ipython"})
# Markers after which a completion is over (chat templates that leak into raw text).
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "</s>", "<|end_of_text|>")
_OPEN_FENCE = re.compile(r"(?P<fence>`{3,}|~{3,})[ \t]*(?P<tag>[\w+#.-]*)[^\n`]*\n")
_CODE_START = re.compile(r"^(def |async def |class |import |from \S+ import |@\w|[A-Za-z_]\w*\s*=[^=])")


@dataclass(frozen=True)
class ExtractedCode:
    """The code found in a completion and how it was found.

    code: the extracted source ('' when nothing code-like was found).
    had_fence: the code came from a markdown fence.
    fence_closed: the fence was closed (False when the completion was cut off inside it).
    n_blocks: fenced blocks in the completion.
    found_entry_point: the code defines ``entry_point`` (False when no entry point was asked for).
    parses: the code is valid Python.
    removed_usage: example calls or a ``__main__`` block were removed.
    truncated: the code, not closed by a fence, did not parse (typically cut off by the length limit)
        and was trimmed back to its longest parseable prefix.
    """

    code: str
    had_fence: bool = False
    fence_closed: bool = False
    n_blocks: int = 0
    found_entry_point: bool = False
    parses: bool = False
    removed_usage: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class _Block:
    code: str
    tag: str
    closed: bool
    fenced: bool


def extract_code(completion: str, *, entry_point: str | None = None, prefix: str = "") -> ExtractedCode:
    """The Python solution in ``prefix + completion`` (see the module docstring for the rules)."""
    result = _extract(_clean(prefix + completion), entry_point)
    if prefix and not result.parses:
        # A model that ignores the prefill and restarts the function: the completion alone may work.
        alone = _extract(_clean(completion), entry_point)
        if alone.parses and (alone.found_entry_point or not result.found_entry_point):
            return alone
    return result


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n")
    for marker in END_MARKERS:
        text = text.split(marker, 1)[0]
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text


def _extract(text: str, entry_point: str | None) -> ExtractedCode:
    blocks = _fenced_blocks(text)
    n_fenced = sum(b.fenced for b in blocks)
    chosen = _choose(blocks, entry_point) if blocks else None
    if chosen is None:
        code = _unfenced_code(text)
        chosen = _Block(code, "", closed=False, fenced=False)
    # A closed fence holds all the model wrote: a syntax error there is the model's, not a cut.
    code, truncated = _trim_to_parseable(chosen.code) if not chosen.closed else (chosen.code, False)
    code, removed = _remove_usage(code, entry_point)
    return ExtractedCode(
        code=code,
        had_fence=chosen.fenced,
        fence_closed=chosen.fenced and chosen.closed,
        n_blocks=n_fenced,
        found_entry_point=entry_point is not None and _defines(code, entry_point),
        parses=bool(code.strip()) and _parses(code),
        removed_usage=removed,
        truncated=truncated,
    )


def _fenced_blocks(text: str) -> list[_Block]:
    """Fenced blocks in order. When the first fence is bare and follows code, it closes that code (a
    prefill opened the fence in the prompt, or the model forgot to open it), and the code is a block."""
    blocks: list[_Block] = []
    position = 0
    first = _OPEN_FENCE.search(text)
    if first is not None and not first.group("tag"):
        lead = _unfenced_code(text[: first.start()])
        if lead.strip() and _parses(lead):
            blocks.append(_Block(lead, "", closed=True, fenced=True))
            position = first.end()
    while (opening := _OPEN_FENCE.search(text, position)) is not None:
        fence, tag = opening.group("fence"), opening.group("tag").lower()
        body_start = opening.end()
        mark = re.escape(fence[0])
        close = re.compile(rf"^[ \t]*{mark}{{{len(fence)},}}[ \t]*$", re.M).search(text, body_start)
        inline = re.compile(rf"{mark}{{{len(fence)},}}[ \t]*$", re.M).search(text, body_start)
        if close is not None and (inline is None or close.start() <= inline.start()):
            blocks.append(_Block(text[body_start : close.start()], tag, closed=True, fenced=True))
            position = close.end()
        elif inline is not None:
            # "    return x```": the fence closes at the end of a code line.
            blocks.append(_Block(text[body_start : inline.start()] + "\n", tag, closed=True, fenced=True))
            position = inline.end()
        else:
            blocks.append(_Block(text[body_start:], tag, closed=False, fenced=True))
            break
    return blocks


def _choose(blocks: list[_Block], entry_point: str | None) -> _Block | None:
    if entry_point is not None:
        defining = [b for b in blocks if _defines(b.code, entry_point)]
        if defining:
            return next((b for b in defining if _parses(b.code)), defining[0])
    pythonic = [b for b in blocks if _looks_like_python(b)]
    if pythonic:
        return pythonic[0]
    non_empty = [b for b in blocks if b.code.strip()]
    return max(non_empty, key=lambda b: len(b.code)) if non_empty else None


def _looks_like_python(block: _Block) -> bool:
    if not block.code.strip():
        return False
    if block.tag in PYTHON_TAGS:
        return True
    if block.tag:
        return False
    return _parses(block.code) and bool(re.search(r"^\s*(def|class|import|from)\b", block.code, re.M))


def _unfenced_code(text: str) -> str:
    """The longest stretch that parses, from the first code-looking line; it may end only where a
    line starts at column 0 (prose after code does), so few candidates are parsed."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if _CODE_START.match(line)][:3]
    for start in starts:
        ends = [len(lines)] + [i for i in range(len(lines) - 1, start, -1) if lines[i][:1].strip()]
        for end in ends:
            candidate = "\n".join(lines[start:end]).rstrip()
            if _parses(candidate):
                return candidate + "\n"
    return "\n".join(lines[starts[0] :]).rstrip() + "\n" if starts else ""


def _trim_to_parseable(code: str) -> tuple[str, bool]:
    if _parses(code):
        return code, False
    lines = code.rstrip("\n").split("\n")
    for end in range(len(lines) - 1, 0, -1):
        candidate = "\n".join(lines[:end]) + "\n"
        if _parses(candidate) and candidate.strip():
            return candidate, True
    return code, False


def _remove_usage(code: str, entry_point: str | None) -> tuple[str, bool]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code, False
    spans = []
    for node in tree.body:
        if _is_main_guard(node) or (entry_point is not None and _is_usage(node, entry_point)):
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            spans.append((start, node.end_lineno or node.lineno))
    if not spans:
        return code, False
    lines = code.split("\n")
    drop = {n for start, end in spans for n in range(start, end + 1)}
    kept = "\n".join(line for number, line in enumerate(lines, 1) if number not in drop)
    return kept.rstrip() + "\n", True


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
    return "__name__" in names


def _is_usage(node: ast.stmt, entry_point: str) -> bool:
    # Top-level statements that run the solution: expressions, asserts, assignments and loops
    # calling it. Definitions and imports stay even if they mention it.
    if not isinstance(
        node, (ast.Expr, ast.Assert, ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.While)
    ):
        return False
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point
        for n in ast.walk(node)
    )


def _defines(code: str, entry_point: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return re.search(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M) is not None
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == entry_point
        for node in tree.body
    ) or any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == entry_point for t in node.targets)
        for node in tree.body
    )


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


_IMPORT_LINE = re.compile(r"^(?:from\s+[\w.]+\s+import\s+[^\n]+|import\s+[\w., ]+)\s*$")


def with_prompt_imports(code: str, prompt: str) -> str:
    """``code`` with the prompt's own top-level import lines prepended where the code lacks them.

    Code prompts (HumanEval style) import names their signatures use (``from typing import List``);
    a chat answer often repeats the signature but not the import, and would fail with a NameError
    that says nothing about the solution. Only whole import lines at column 0 of the prompt count.
    """
    missing = []
    for line in prompt.splitlines():
        stripped = line.rstrip()
        if _IMPORT_LINE.match(stripped) and stripped not in code:
            missing.append(stripped)
    return "\n".join(missing) + "\n" + code if missing else code
