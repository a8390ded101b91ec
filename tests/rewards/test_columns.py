"""Published layouts and column mappings: rows in each published schema become tasks whose tests the
host compares, and the tasks' own references pass them in the real sandbox (a wrong answer fails).

The rows are written here in the published schemas: `evalplus/humanevalplus` and
`evalplus/mbppplus` as EvalPlus's conversion writes them (tools/*/to_original_fmt.py in its
repository: a test script holding the literal `inputs` and `results`), EffiBench's
`small_test_cases`/`test_case` assert lines, Mercury's JSON `test_cases` with its
`convert_offline`/`evaluate_offline` functions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from rewards.datasets import LAYOUTS, check_training_tasks, evaluation_split, load_tasks, save_tasks
from rewards.datasets.columns import parse_columns
from rewards.datasets.layouts import parse_evalplus_test
from rewards.tasks import Task
from sandbox import Sandbox
from sandbox.types import Status

ASSERTION = """import numpy as np

def is_floats(x) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)):
        return all(isinstance(i, float) for i in x)
    return False

def assertion(out, exp, atol):
    exact_match = out == exp
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if not exact_match and atol != 0:
        assert np.allclose(out, exp, rtol=1e-07, atol=atol)
    else:
        assert exact_match
"""


def humaneval_test(inputs: str, results: str | None, atol: str = "0") -> str:
    if results is None:  # EvalPlus's "crosscheck" form: compared with the reference, no results stored
        return (
            f"{ASSERTION}\ndef ref_func(string):\n    return [string[:i + 1] for i in range(len(string))]\n\n"
            f"def check(candidate):\n    inputs = {inputs}\n    for i, inp in enumerate(inputs):\n"
            f"        assertion(candidate(*inp), ref_func(*inp), {atol})\n"
        )
    return (
        f"{ASSERTION}\ndef check(candidate):\n    inputs = {inputs}\n    results = {results}\n"
        f"    for i, (inp, exp) in enumerate(zip(inputs, results)):\n"
        f"        assertion(candidate(*inp), exp, {atol})\n"
    )


HUMANEVALPLUS_ROWS = [
    {
        "task_id": "HumanEval/53",
        "prompt": 'def add(x: int, y: int):\n    """Add two numbers x and y\n    >>> add(2, 3)\n'
        '    5\n    """\n',
        "canonical_solution": "    return x + y\n",
        "entry_point": "add",
        "test": humaneval_test("[[0, 1], [1, 0], [2, 3], [5, 7], [-7, 5], [99999999999999999999, 1]]",
                               "[1, 1, 5, 12, -2, 100000000000000000000]"),
    },
    {
        "task_id": "HumanEval/2",
        "prompt": 'def truncate_number(number: float) -> float:\n    """Return the decimal part.\n    """\n',
        "canonical_solution": "    return number % 1.0\n",
        "entry_point": "truncate_number",
        "test": humaneval_test(
            "[[3.5], [1.33], [123.456]]", "[0.5, 0.33000000000000007, 0.45600000000000307]", atol="1e-06"
        ),
    },
    {
        "task_id": "HumanEval/14",
        "prompt": 'from typing import List\n\n\ndef all_prefixes(string: str) -> List[str]:\n'
        '    """All prefixes."""\n',
        "canonical_solution": "    return [string[:i + 1] for i in range(len(string))]\n",
        "entry_point": "all_prefixes",
        "test": humaneval_test("[[''], ['asdfgh'], ['WWW']]", None),
    },
]  # fmt: skip

SET_ASSERTION = """def assertion(out, exp, atol):
    out, exp = set(out), set(exp)
    assert out == exp
"""
MBPP_TEST = """import numpy as np
from math import inf

{assertion}
inputs = {inputs}
results = {results}
for i, (inp, exp) in enumerate(zip(inputs, results)):
    assertion({entry_point}(*inp), exp, 0)
"""
MBPPPLUS_ROWS = [
    {
        "task_id": 2,
        "code": "\ndef similar_elements(test_tup1, test_tup2):\n"
        "  return tuple(set(test_tup1) & set(test_tup2))\n",
        "prompt": "Write a function to find the shared elements from the given two lists.",
        "source_file": "Benchmark Questions Verification V2.ipynb",
        "test_imports": [],
        "test_list": [
            "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
            "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))",
            "assert set(similar_elements((11, 12, 14, 13),(17, 15, 14, 13))) == set((13, 14))",
        ],
        "test": MBPP_TEST.format(
            assertion=SET_ASSERTION,
            inputs="[[(3, 4, 5, 6), (5, 7, 4, 10)], [(1, 2, 3, 4), (5, 4, 3, 7)], "
            "[(11, 12, 14, 13), (17, 15, 14, 13)], [(), (1,)]]",
            results="[(4, 5), (3, 4), (13, 14), ()]",
            entry_point="similar_elements",
        ),
    },
    {
        "task_id": 786,
        "code": "import re\ndef text_match_three(text):\n        patterns = 'ab{3}?'\n"
        "        return re.search(patterns,  text)",
        "prompt": "Write a function that matches a string that has an a followed by three 'b'.",
        "source_file": "Benchmark Questions Verification V2.ipynb",
        "test_imports": [],
        "test_list": ["assert not text_match_three(\"ac\")", "assert not text_match_three(\"dc\")",
                      "assert text_match_three(\"abbbba\")"],
        "test": MBPP_TEST.format(
            assertion="def assertion(out, exp, atol):\n    assert exp == (out is not None)\n",
            inputs="[['ac'], ['dc'], ['abbbba'], ['caacabbbba']]",
            results="[False, False, True, True]",
            entry_point="text_match_three",
        ),
    },
]  # fmt: skip

EFFIBENCH_ROWS = [
    {
        "problem_idx": 2366,
        "task_name": "Minimum Replacements to Sort the Array",
        "difficulty": "Hard",
        "markdown_description": "You are given a 0-indexed integer array `nums`. In one operation you can "
        "replace any element of the array with any two elements that sum to it. Return the minimum number "
        "of operations to make an array that is sorted in non-decreasing order.",
        "canonical_solution": (
            "class Solution:\n    def minimumReplacement(self, nums: List[int]) -> int:\n        ans = 0\n"
            "        n = len(nums)\n        mx = nums[-1]\n        for i in range(n - 2, -1, -1):\n"
            "            if nums[i] <= mx:\n                mx = nums[i]\n                continue\n"
            "            k = (nums[i] + mx - 1) // mx\n            ans += k - 1\n"
            "            mx = nums[i] // k\n"
            "        return ans\n"
        ),
        "small_test_cases": "solution = Solution()\nassert solution.minimumReplacement([3, 9, 3]) == 2\n"
        "assert solution.minimumReplacement([1, 2, 3, 4, 5]) == 0\n",
        "test_case": "assert solution.minimumReplacement([73, 81, 20, 65]) == 8\n"
        "assert solution.minimumReplacement([100, 44, 45, 79, 96, 46, 49, 26, 2]) == 440\n"
        "assert solution.minimumReplacement([94, 1, 87]) == 93\n",
    },
    {
        "problem_idx": 2,
        "task_name": "Add Two Numbers",
        "difficulty": "Medium",
        "markdown_description": "Add two numbers given as linked lists.",
        "canonical_solution": "class Solution:\n    def addTwoNumbers(self, l1, l2):\n        return l1\n",
        "small_test_cases": "solution = Solution()\n"
        "assert solution.addTwoNumbers(ListNode(2), ListNode(5)) == ListNode(7)\n",
        "test_case": "assert solution.addTwoNumbers(ListNode(1), ListNode(1)) == ListNode(2)\n",
    },
]

PLAIN_CONVERT = "def convert_offline(case):\n    return case\n"
PLAIN_EVALUATE = (
    "def evaluate_offline(inputs, outputs, expected):\n    if outputs == expected:\n        return True\n"
    "\n    return False\n"
)
TWO_SUM = (
    "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
    "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
    "                return [seen[target - x], i]\n            seen[x] = i\n"
)
TWO_SUM_SLOW = (
    "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
    "        for i in range(len(nums)):\n            for j in range(i + 1, len(nums)):\n"
    "                if nums[i] + nums[j] == target:\n                    return [i, j]\n"
)
MERCURY_ROWS = [
    {
        "slug_name": "two-sum",
        "meta_info": {"data": {"question": {"questionId": "1"}}},
        "id": "1",
        "difficulty": "Easy",
        "pretty_content": ["Given an array of integers `nums` and an integer `target`, return indices of the "
                           "two numbers such that they add up to `target`."],
        "solutions": [{"hash": 11, "runtime": "712ms", "solution": TWO_SUM_SLOW},
                      {"hash": 12, "runtime": "48ms", "solution": TWO_SUM}],
        "prompt": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
        "        ",
        "generator_code": "def generate_test_case():\n    pass\n",
        "convert_online": "def convert_online(case):\n    return case\n",
        "convert_offline": PLAIN_CONVERT,
        "evaluate_offline": PLAIN_EVALUATE,
        "entry_point": "twoSum",
        "test_cases": json.dumps([{"input": [[2, 7, 11, 15], 9], "expected": [0, 1]},
                                  {"input": [[3, 2, 4], 6], "expected": [1, 2]},
                                  {"input": [[3, 3], 6], "expected": [0, 1]}]),
    },
    {
        "slug_name": "add-two-numbers",
        "meta_info": {},
        "id": "2",
        "difficulty": "Medium",
        "pretty_content": ["Add two numbers given as linked lists."],
        "solutions": [],
        "prompt": "class Solution:\n    def addTwoNumbers(self, l1: Optional[ListNode], "
        "l2: Optional[ListNode]) -> Optional[ListNode]:\n        ",
        "generator_code": "",
        "convert_online": "",
        "convert_offline": "def convert_offline(case):\n    import lctk\n    inputs, expected = case\n"
        "    inputs = tuple([lctk.linkedList(inputs[0]), lctk.linkedList(inputs[1])])\n"
        "    return inputs, expected",
        "evaluate_offline": "def evaluate_offline(inputs, outputs, expected):\n    import lctk\n"
        "    outputs = lctk.linkedList2Arr(outputs)\n    if outputs == expected:\n        return True\n"
        "\n    return False",
        "entry_point": "addTwoNumbers",
        "test_cases": json.dumps([{"input": [[2, 4, 3], [5, 6, 4]], "expected": [7, 0, 8]}]),
    },
]  # fmt: skip


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def passes(box: Sandbox, task: Task, code: str) -> bool:
    result = box.run_function_tests(code, task.entry_point, task.function_tests, atol=task.atol)
    return result.status is Status.PASSED


def test_evalplus_humanevalplus_rows_become_function_tests(tmp_path: Path, box: Sandbox) -> None:
    rows = write_rows(tmp_path / "humanevalplus.jsonl", HUMANEVALPLUS_ROWS)
    add, truncate, prefixes = load_tasks(
        rows, columns="evalplus_humanevalplus", sandbox=box, cache_dir=tmp_path
    )
    assert add.id == "HumanEval/53" and add.entry_point == "add" and add.n_base_tests is None
    assert [t.args for t in add.function_tests][-1] == (99999999999999999999, 1)
    assert add.function_tests[-1].expected == 100000000000000000000 and add.atol is None
    assert truncate.atol == 1e-06 and truncate.trust_level == "function"
    # No results stored: the expected outputs came from running the reference in the sandbox.
    assert [t.expected for t in prefixes.function_tests] == [
        [],
        ["a", "as", "asd", "asdf", "asdfg", "asdfgh"],
        ["W", "WW", "WWW"],
    ]
    for task in (add, truncate, prefixes):
        assert passes(box, task, task.reference)
        assert task.test_script.endswith(f"check({task.entry_point})\n")
    assert not passes(box, add, "def add(x, y):\n    return x - y\n")


def test_evalplus_mbppplus_rows_keep_tuples_and_the_release_conventions(tmp_path: Path, box: Sandbox) -> None:
    rows = write_rows(tmp_path / "mbppplus.jsonl", MBPPPLUS_ROWS)
    similar, regex = load_tasks(rows, columns="evalplus_mbppplus")
    assert similar.id == "Mbpp/2" and similar.entry_point == "similar_elements"
    assert similar.function_tests[0].args == ((3, 4, 5, 6), (5, 7, 4, 10))  # tuples, as the repr wrote them
    assert similar.metadata["oracle"] == "set_equal" and similar.n_base_tests == 3
    assert similar.prompt == (
        '"""\nWrite a function to find the shared elements from the given two lists.\n'
        'assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"""\n'
    )
    # Graded on `is not None`: the reference is wrapped to return that boolean, as the release loader does.
    assert regex.metadata["oracle"] == "not_none" and regex.function_tests[2].expected is True
    for task in (similar, regex):
        assert passes(box, task, task.reference)
    assert not passes(box, regex, MBPPPLUS_ROWS[1]["code"])  # the match object itself is not a boolean


def test_effibench_rows_ask_for_a_function_and_skip_what_the_host_cannot_compare(
    tmp_path: Path, box: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    rows = write_rows(tmp_path / "effibench.jsonl", EFFIBENCH_ROWS)
    (task,) = load_tasks(rows, columns="effibench")  # the linked-list problem is skipped, and logged
    assert "skipped 1 row" in caplog.text and "effibench/2" not in [task.id]
    assert task.id == "effibench/2366" and task.entry_point == "minimumReplacement"
    assert task.n_base_tests == 2 and len(task.function_tests) == 5
    assert task.function_tests[3].args == ([100, 44, 45, 79, 96, 46, 49, 26, 2],)
    assert "def minimumReplacement(nums: List[int]) -> int:" in task.prompt
    assert task.metadata["difficulty"] == "Hard" and passes(box, task, task.reference)
    candidate = "def minimumReplacement(nums):\n    return 0\n"
    assert not passes(box, task, candidate)


def test_mercury_rows_become_function_tests_with_references_fastest_first(
    tmp_path: Path, box: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    rows = write_rows(tmp_path / "mercury.jsonl", MERCURY_ROWS)
    (task,) = load_tasks(rows, columns="mercury")
    assert "skipped 1 row" in caplog.text and "linked lists" in caplog.text
    assert task.id == "mercury/two-sum" and task.entry_point == "twoSum"
    assert task.function_tests[0].args == ([2, 7, 11, 15], 9) and task.function_tests[0].expected == [0, 1]
    assert "def twoSum(nums: List[int], target: int) -> List[int]:" in task.prompt
    assert "return Solution().twoSum(" in task.references[0] and "seen = {}" in task.references[0]
    assert all(passes(box, task, reference) for reference in task.references)
    assert not passes(box, task, "def twoSum(nums, target):\n    return [0, 0]\n")


def test_hub_ids_of_the_layouts_are_datasets_with_their_splits() -> None:
    assert {layout.hub_ids[0] for layout in LAYOUTS.values()} == {
        "evalplus/humanevalplus", "evalplus/mbppplus", "DONG19/EffiBench", "Elfsong/Mercury",
    }  # fmt: skip
    assert evaluation_split("Elfsong/Mercury") == "eval"
    with pytest.raises(ValueError, match="held out for evaluation"):
        check_training_tasks((), "Elfsong/Mercury", "eval")
    layout, mapping = parse_columns("mercury,pretty_content=description")
    assert layout is LAYOUTS["mercury"] and mapping["pretty_content"] == "description"


def test_a_column_mapping_reads_function_program_and_assert_tests(tmp_path: Path, box: Sandbox) -> None:
    add_code = "def add(a, b):\n    return a + b\n"
    io = json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})
    double = "def double(x):\n    return 2 * x\n"
    rows = [
        {"qid": "q1", "question": "Add a and b.", "fn": "add", "solution": add_code, "io": None,
         "checks": None, "cases": [{"input": [1, 2], "output": 3}, {"input": [[1], [2]], "output": [1, 2]}],
         "level": "easy"},
        {"qid": "q2", "question": "Print the sum.", "fn": None, "cases": None, "checks": None,
         "solution": "print(sum(map(int, input().split())))", "io": io, "level": "easy"},
        {"qid": "q3", "question": "Double x.", "fn": "double", "solution": double, "cases": None,
         "checks": ["assert double(2) == 4", "assert double(-1) == -2"], "io": None, "level": "easy"},
        {"qid": "q4", "question": "Loop.", "fn": "double", "solution": "", "cases": None, "io": None,
         "checks": ["for i in range(3):\n    assert double(i) == 2 * i"], "level": "hard"},
    ]  # fmt: skip
    path = write_rows(tmp_path / "rows.jsonl", rows)
    columns = (
        "id=qid,prompt=question,entry_point=fn,reference=solution,tests=cases,program_tests=io,"
        "asserts=checks,meta.level=level"
    )
    add, program, doubled = load_tasks(path, columns=columns)  # q4's loop cannot be a host-compared test
    assert (add.id, add.metadata["level"], add.function_tests[1].args) == ("q1", "easy", ([1], [2]))
    assert program.trust_level == "program" and program.program_tests[1].expected_stdout == "10\n"
    assert [t.args for t in doubled.function_tests] == [(2,), (-1,)]
    assert passes(box, add, add.reference) and passes(box, doubled, doubled.reference)
    assert box.run_program(program.reference, program.program_tests).status is Status.PASSED
    # The mapped tasks save to and load from effirl's own task files unchanged.
    assert load_tasks(save_tasks([add, doubled], tmp_path / "saved.jsonl")) == [add, doubled]


def test_a_script_column_keeps_its_trust_level_and_mapping_mistakes_name_the_fix(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "scripts.jsonl", [{"q": "Write f.", "t": "assert f(1) == 1", "name": "f"}])
    (task,) = load_tasks(path, columns="prompt=q,test_script=t,entry_point=name")
    assert task.trust_level == "script"
    with pytest.raises(ValueError, match="unknown role 'promt'; did you mean 'prompt'"):
        load_tasks(path, columns="promt=q,tests=t")
    with pytest.raises(ValueError, match=r"no column\(s\) tests=cases; its columns are q, t, name"):
        load_tasks(path, columns="prompt=q,tests=cases")
    with pytest.raises(ValueError, match="did you mean 'mercury'"):
        load_tasks(path, columns="mercurry")
    with pytest.raises(ValueError, match="map one of tests"):
        load_tasks(path, columns="prompt=q")


def test_evalplus_test_scripts_are_read_without_running_them() -> None:
    script = (
        "import os\nos.system('touch /tmp/pwned')\n"
        "inputs = [[float('inf')], [-0.5], [(1+2j)], [set()], [{1: (2, 3)}]]\n"
        "results = [inf, -nan, -(1-2j), frozenset(), None]\n"
        "for i, (inp, exp) in enumerate(zip(inputs, results)):\n    assertion(f(*inp), exp, 1e-4)\n"
    )  # fmt: skip
    parsed = parse_evalplus_test(script)
    assert parsed.entry_point == "f" and parsed.atol == 1e-4
    assert parsed.inputs == [(math.inf,), (-0.5,), (1 + 2j,), (set(),), ({1: (2, 3)},)]
    assert parsed.results[0] == math.inf and math.isnan(parsed.results[1]) and parsed.results[2] == -1 + 2j
    with pytest.raises(ValueError, match="is not a literal"):
        parse_evalplus_test("inputs = [[__import__('os').getcwd()]]\n")


def test_data_show_reports_the_tasks_and_their_trust_levels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rewards.datasets.command import main
    from rewards.user_error import UserError

    rows = write_rows(tmp_path / "mercury.jsonl", MERCURY_ROWS)
    assert main(["show", str(rows), "--columns", "mercury"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"1 tasks from {rows}: 1 function\n")
    assert "first: mercury/two-sum, entry point twoSum, 3 function tests (None base), 2 references" in out
    scripts = write_rows(tmp_path / "scripts.jsonl", [{"q": "Write f.", "t": "assert f(1) == 1"}])
    assert main(["show", str(scripts), "--columns", "prompt=q,test_script=t"]) == 0
    assert "1 script" in capsys.readouterr().out
    with pytest.raises(UserError, match="unknown role 'promt'"):
        main(["show", str(rows), "--columns", "promt=q"])
