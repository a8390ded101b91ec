"""Code extraction from realistic small-model completions."""

from __future__ import annotations

import ast

import pytest

from rewards.extraction import extract_code


def runs(code: str, entry_point: str, *args: object) -> object:
    namespace: dict[str, object] = {}
    exec(code, namespace)
    function = namespace[entry_point]
    assert callable(function)
    return function(*args)


CHAT_ONE_FENCE = """Sure! Here is a Python function that returns the sum from 1 to n:

```python
def sum_to(n):
    return n * (n + 1) // 2
```

This uses the formula n(n+1)/2, so it runs in O(1) time. For example, `sum_to(3)` returns 6."""


def test_chat_preamble_fence_and_trailing_prose() -> None:
    result = extract_code(CHAT_ONE_FENCE, entry_point="sum_to")
    assert result.code == "def sum_to(n):\n    return n * (n + 1) // 2\n"
    assert result.had_fence and result.fence_closed and result.parses and result.found_entry_point
    assert result.n_blocks == 1 and not result.truncated and not result.removed_usage


@pytest.mark.parametrize(
    "opening", ["```python", "```py", "```Python3", "```", "~~~python", "~~~", "````python"]
)
def test_fence_styles(opening: str) -> None:
    closing = opening.rstrip("pythonPY3")
    text = f"Here you go:\n{opening}\ndef double(x):\n    return 2 * x\n{closing}\nDone."
    result = extract_code(text, entry_point="double")
    assert result.code == "def double(x):\n    return 2 * x\n"
    assert result.had_fence and result.fence_closed


def test_picks_block_defining_entry_point_over_usage_and_output_blocks() -> None:
    text = """To solve it, first import what we need:

```python
from collections import Counter
```

Then the function:

```python
from collections import Counter

def most_common(nums):
    return Counter(nums).most_common(1)[0][0]
```

Example usage:

```python
print(most_common([1, 2, 2]))
```

Output:
```
2
```"""
    result = extract_code(text, entry_point="most_common")
    assert "def most_common(nums):" in result.code
    assert result.n_blocks == 4
    assert runs(result.code, "most_common", [1, 2, 2]) == 2


def test_without_entry_point_takes_first_python_block_not_the_output() -> None:
    text = "Output first:\n```\n42\n```\nCode:\n```python\ndef answer():\n    return 42\n```\n"
    result = extract_code(text)
    assert result.code.startswith("def answer()")
    assert not result.found_entry_point


def test_first_of_two_defining_blocks_wins() -> None:
    text = (
        "A simple version:\n```python\ndef f(n):\n    return sum(range(n + 1))\n```\n"
        "A faster version:\n```python\ndef f(n):\n    return n * (n + 1) // 2\n```\n"
    )
    assert "sum(range" in extract_code(text, entry_point="f").code


def test_skips_defining_block_with_syntax_error_for_one_that_parses() -> None:
    text = "```python\ndef f(n)\n    return n\n```\nFixed:\n```python\ndef f(n):\n    return n\n```"
    result = extract_code(text, entry_point="f")
    assert result.parses and runs(result.code, "f", 5) == 5


def test_unterminated_fence_cut_by_length_limit() -> None:
    text = (
        "```python\ndef is_prime(n):\n    if n < 2:\n        return False\n    d = 2\n"
        "    while d * d <= n:\n        if n % d == 0:\n            return False\n        d += 1\n"
        "    return True\n\n\ndef count_primes(n):\n    return sum(1 for k in range(n + 1) if is_pr"
    )
    result = extract_code(text, entry_point="is_prime")
    assert result.had_fence and not result.fence_closed and result.truncated and result.parses
    assert runs(result.code, "is_prime", 7) is True
    assert "count_primes" not in result.code


def test_unterminated_fence_that_parses_is_kept_whole() -> None:
    result = extract_code("```python\ndef f(x):\n    return x + 1\n", entry_point="f")
    assert result.code == "def f(x):\n    return x + 1\n"
    assert not result.fence_closed and not result.truncated


def test_raw_code_without_fence() -> None:
    text = "def add(a, b):\n    return a + b\n"
    result = extract_code(text, entry_point="add")
    assert result.code == text and not result.had_fence and result.found_entry_point


def test_raw_code_with_prose_around_it() -> None:
    text = (
        "The function below adds two numbers.\n\n"
        "import math\n\ndef hyp(a, b):\n    return math.sqrt(a * a + b * b)\n\n"
        "This uses the Pythagorean theorem, which states that c^2 = a^2 + b^2."
    )
    result = extract_code(text, entry_point="hyp")
    assert result.code == "import math\n\ndef hyp(a, b):\n    return math.sqrt(a * a + b * b)\n"
    assert result.parses and not result.had_fence


def test_prefill_inside_fence_completion_continues_the_body() -> None:
    prefix = "Write sum_to(n).\n```python\ndef sum_to(n):\n"
    completion = "    return n * (n + 1) // 2\n```\n\nThis function computes the sum in constant time."
    result = extract_code(completion, entry_point="sum_to", prefix=prefix)
    assert result.code == "def sum_to(n):\n    return n * (n + 1) // 2\n"
    assert result.found_entry_point and result.fence_closed


def test_prefill_without_fence_and_a_stray_closing_fence() -> None:
    prefix = 'def sum_to(n):\n    """Return 1 + 2 + ... + n."""\n'
    completion = (
        "    total = 0\n    for i in range(1, n + 1):\n        total += i\n    return total\n```\n\nDone!"
    )
    result = extract_code(completion, entry_point="sum_to", prefix=prefix)
    assert result.parses and runs(result.code, "sum_to", 4) == 10
    assert "Done" not in result.code


def test_prefill_humaneval_style_body_only() -> None:
    prompt = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n'
    result = extract_code("    return sum(xs)\n", entry_point="total", prefix=prompt)
    assert result.code.startswith("from typing import List") and runs(result.code, "total", [1, 2]) == 3


def test_model_ignoring_prefill_and_restarting_the_function() -> None:
    prefix = "```python\ndef f(x):\n"
    completion = "def f(x):\n    return x * 3\n```"
    result = extract_code(completion, entry_point="f", prefix=prefix)
    assert result.parses and runs(result.code, "f", 2) == 6


def test_removes_example_usage_and_main_guard() -> None:
    text = """```python
def square(x):
    return x * x

print(square(3))  # Output: 9
assert square(2) == 5
result = square(4)
for k in range(3):
    print(square(k))

if __name__ == "__main__":
    import sys
    print(square(int(sys.argv[1])))
```"""
    result = extract_code(text, entry_point="square")
    assert result.removed_usage
    assert result.code == "def square(x):\n    return x * x\n"


def test_keeps_helpers_constants_and_imports() -> None:
    text = (
        "```python\nimport heapq\nLIMIT = 10\n\n\ndef helper(x):\n    return x + LIMIT\n\n\n"
        "def solve(xs):\n    return [helper(v) for v in heapq.nsmallest(2, xs)]\n```"
    )
    result = extract_code(text, entry_point="solve")
    assert not result.removed_usage
    assert runs(result.code, "solve", [5, 1, 3]) == [11, 13]


def test_fence_closed_at_end_of_a_code_line() -> None:
    text = "```python\ndef neg(x):\n    return -x```\nThat's it."
    result = extract_code(text, entry_point="neg")
    assert result.parses and runs(result.code, "neg", 3) == -3


def test_inline_opening_fence_after_text_on_same_line() -> None:
    text = "Here is the code: ```python\ndef one():\n    return 1\n```"
    assert extract_code(text, entry_point="one").code == "def one():\n    return 1\n"


def test_chat_end_markers_and_thinking_are_dropped() -> None:
    text = (
        "<think>Maybe ```python\ndef f():\n    return 0\n``` no.</think>\n"
        "```python\ndef f():\n    return 1\n```<|im_end|>\n```python\ndef f():\n    return 2\n```"
    )
    assert runs(extract_code(text, entry_point="f").code, "f") == 1


def test_missing_entry_point_is_reported() -> None:
    result = extract_code("```python\ndef other(x):\n    return x\n```", entry_point="wanted")
    assert result.parses and not result.found_entry_point and "def other" in result.code


def test_nothing_code_like() -> None:
    result = extract_code("I'm sorry, I cannot help with that.", entry_point="f")
    assert result.code == "" and not result.parses and not result.found_entry_point


def test_empty_completion() -> None:
    assert extract_code("").code == ""


def test_non_python_block_is_not_chosen_when_python_exists() -> None:
    text = "```bash\npip install numpy\n```\n```python\ndef f():\n    return 3\n```"
    assert extract_code(text).code == "def f():\n    return 3\n"


def test_windows_line_endings() -> None:
    text = "```python\r\ndef f(x):\r\n    return x\r\n```\r\n"
    assert extract_code(text, entry_point="f").code == "def f(x):\n    return x\n"


def test_genuine_syntax_error_in_closed_fence_is_left_for_the_sandbox() -> None:
    text = "```python\ndef f(x):\n    return x +* 1\n\ndef g():\n    return 2\n```"
    result = extract_code(text, entry_point="f")
    assert not result.parses and not result.truncated
    assert "return x +* 1" in result.code


@pytest.mark.parametrize(
    "completion",
    [
        CHAT_ONE_FENCE,
        "```python\ndef sum_to(n):\n    return n * (n + 1) // 2\n```",
        "def sum_to(n):\n    return n * (n + 1) // 2\n\nExplanation: Gauss.",
        "```\ndef sum_to(n):\n    return n * (n + 1) // 2\n",
    ],
)
def test_extracted_code_is_valid_and_works(completion: str) -> None:
    result = extract_code(completion, entry_point="sum_to")
    ast.parse(result.code)
    assert runs(result.code, "sum_to", 100) == 5050


def test_prompt_imports_are_added_when_the_answer_lacks_them():
    from rewards.extraction import with_prompt_imports

    prompt = 'from typing import List\nimport math\n\n\ndef f(xs: List[int]) -> int:\n    """Doc."""\n'
    answer = "def f(xs: List[int]) -> int:\n    return math.floor(sum(xs))\n"
    assert with_prompt_imports(answer, prompt) == "from typing import List\nimport math\n" + answer
    assert with_prompt_imports("import math\n" + answer, prompt).count("import math") == 1
    assert with_prompt_imports(answer, "Write a function that sums a list.") == answer
    assert with_prompt_imports(answer, "We import things sometimes") == answer
