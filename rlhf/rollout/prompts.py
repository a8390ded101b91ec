"""Rendering a task into the prompt string a model continues.

Styles:

- ``"chat"``: the chat template with one user turn; the model writes the whole answer.
- ``"chat_fence"``: as ``chat``, and the assistant turn already opens a ```` ```python ```` fence, so
  the answer is code from its first token; with ``stop=["```"]`` it ends at the closing fence.
- ``"chat_prefill"``: as ``chat_fence``, and the fence already holds the function's signature (with
  the imports and helpers a code prompt puts before it, but not its docstring, which the user turn
  shows; for a prose prompt the signature comes from the reference solution), so the model is asked
  for the body only.
- ``"raw"``: no template, for base models: the code prompt itself, docstring included (HumanEval
  style), which the model continues.

Which prefill helps depends on the model. Greedy on the first 40 HumanEval+ tasks, the built-in
SmolLM2-135M-Instruct passed 5/40 with ``chat``, 5/40 with ``chat_fence`` (answers a third shorter)
and 0/40 with ``chat_prefill``: after a bare signature it closes the fence at once. Adding the body's
indentation to the prefill does not fix it portably: ``"\n    "`` is not where its tokenizer splits
(``"\n   "`` + ``" return"``), so the model writes five-space bodies.

The text a prefill puts in the model's mouth is part of its answer but not of its completion:
:func:`response_prefix` returns it, so ``response_prefix(task, style) + completion_text`` is the
whole answer to extract code from.
"""

from __future__ import annotations

import ast
import warnings

from transformers import PreTrainedTokenizerBase

from rewards.tasks import Task

PROMPT_STYLES = ("chat", "chat_fence", "chat_prefill", "raw")
CODE_FENCE = "```python\n"
DEFAULT_INSTRUCTION = (
    "Write a solution that is correct and efficient: prefer the lowest time complexity and avoid "
    "needless work. Answer with a single ```python code block."
)


def style_stop_strings(style: str) -> tuple[str, ...]:
    """Strings that end an answer in ``style``: a fenced answer is over at its closing fence (what a
    small model writes after it, prose about its code, is never run and only costs tokens)."""
    _check_style(style)
    return ("```",) if style in ("chat_fence", "chat_prefill") else ()


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; use one of {list(PROMPT_STYLES)}")


def _prompt_defines_entry_point(task: Task) -> bool:
    """Whether the prompt is a code stub to complete (HumanEval's), not prose about a function.

    It must parse as Python and define the entry point at top level: prose that merely shows the
    function in a fence (an optimisation task's slow version) is a problem statement, and wrapping
    it in a code block as "the function to complete" garbles the prompt.
    """
    if not task.entry_point:
        return False
    # A bare signature ("def f(a):" with no body yet) is a stub too.
    sources = (task.prompt, task.prompt.rstrip() + "\n    pass\n")
    return any(function_header(source, task.entry_point) is not None for source in sources)


def function_header(source: str, name: str) -> str | None:
    """The ``def name(...):`` line (decorators included) of a top-level function in ``source``."""
    tree = _parse_quietly(source)
    for node in tree.body if tree is not None else ():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            stub = type(node)(**{**{f: getattr(node, f) for f in node._fields}, "body": [ast.Pass()]})
            # unparse gives "def name(...):\n    pass"; drop the body line.
            return ast.unparse(ast.fix_missing_locations(stub)).rsplit("\n", 1)[0] + "\n"
    return None


def _parse_quietly(source: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():
            # Dataset code is full of "\d"-style escapes; their warnings are noise here.
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            return ast.parse(source)
    except SyntaxError:
        return None


def _prompt_up_to_signature(task: Task) -> str:
    """A code prompt cut after the entry point's ``def`` line: imports and helpers kept, the entry
    point's docstring dropped. The whole prompt when it cannot be cut cleanly."""
    prompt = task.prompt.lstrip("\n")
    tree = _parse_quietly(prompt)
    for node in tree.body if tree is not None else ():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == task.entry_point:
            body_line = node.body[0].lineno  # 1-based; the signature ends on the line before
            if body_line > node.lineno:
                return "".join(prompt.splitlines(keepends=True)[: body_line - 1])
    return prompt.rstrip() + "\n"


def code_stub(task: Task) -> str:
    """The code a ``chat_prefill`` answer starts with: the code prompt up to and including the
    entry point's signature, else the signature from the first reference that has it, else ""."""
    if _prompt_defines_entry_point(task):
        return _prompt_up_to_signature(task)
    if task.entry_point:
        for reference in task.references:
            header = function_header(reference, task.entry_point)
            if header is not None:
                return header
    return ""


def user_message(task: Task, instruction: str | None = None) -> str:
    """The user turn for chat styles: the problem, what to name, and what a good answer is."""
    instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
    if _prompt_defines_entry_point(task):
        code = task.prompt.lstrip("\n").rstrip() + "\n"
        return f"Complete the following Python function.\n\n{CODE_FENCE}{code}```\n\n{instruction}"
    if task.entry_point:
        target = f"Define a Python function named `{task.entry_point}`."
    else:
        target = "Write a complete Python program that reads standard input and writes standard output."
    return f"{task.prompt.strip()}\n\n{target} {instruction}"


def _as_docstring(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith(('"""', "'''")):
        return stripped + "\n"
    return '"""\n' + stripped.replace('"""', r"\"\"\"") + '\n"""\n'


def response_prefix(task: Task, style: str) -> str:
    """The start of the model's answer that the rendered prompt already contains ("" for ``chat``)."""
    _check_style(style)
    if style == "chat":
        return ""
    if style == "chat_fence":
        return CODE_FENCE
    if style == "chat_prefill":
        return CODE_FENCE + code_stub(task)
    if _prompt_defines_entry_point(task):
        return task.prompt.lstrip("\n").rstrip() + "\n"
    return _as_docstring(task.prompt) + code_stub(task)


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    style: str = "chat_fence",
    *,
    system_prompt: str | None = None,
    instruction: str | None = None,
) -> str:
    """The prompt string for ``task`` in ``style`` (see the module docstring).

    The string carries its own special tokens (the chat template's, or BOS for ``raw`` when the
    tokenizer normally adds one), so engines tokenize it with ``add_special_tokens=False``.
    system_prompt: a system turn for chat styles (None: the template's default, if any).
    instruction: replaces :data:`DEFAULT_INSTRUCTION` in the user turn.
    """
    _check_style(style)
    if style == "raw":
        return (tokenizer.bos_token if _adds_bos(tokenizer) else "") + response_prefix(task, style)
    if not tokenizer.chat_template:
        raise ValueError(
            f"prompt style {style!r} needs a chat template, and this tokenizer has none; "
            "use prompt_style='raw' for base models"
        )
    messages = [{"role": "user", "content": user_message(task, instruction)}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return rendered + response_prefix(task, style)
