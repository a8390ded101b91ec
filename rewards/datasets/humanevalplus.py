"""HumanEval+ (EvalPlus): the 164 HumanEval problems with many more test inputs.

Each task's function tests are the original base inputs followed by the plus inputs (``n_base_tests``
marks the split); expected outputs come from running ``prompt + canonical_solution`` in the sandbox.
``test_script`` is HumanEval's own ``check`` function followed by a call on the entry point, so it
runs as a self-contained script after the candidate's code.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rewards.datasets.evalplus import ReleaseSource, argument_tuples, load_release_tasks
from rewards.datasets.expected_outputs import DEFAULT_TIMEOUT_S
from rewards.tasks import Task

if TYPE_CHECKING:
    from sandbox import Sandbox


def _reference(record: dict[str, Any]) -> str:
    return record["prompt"] + record["canonical_solution"]


def _test_script(record: dict[str, Any]) -> str | None:
    test = record.get("test")
    return f"{test}\n\ncheck({record['entry_point']})\n" if test else None


HUMANEVALPLUS = ReleaseSource(
    name="humanevalplus",
    subdir="humanevalplus",
    filename="HumanEvalPlus.jsonl.gz",
    url="https://github.com/evalplus/humanevalplus_release/releases",
    reference=_reference,
    test_script=_test_script,
    inputs=argument_tuples,
    # EvalPlus accepts any root of the polynomial here, not only the reference's.
    special_oracles={"find_zero": "poly_root"},
)


def load_humanevalplus(
    path: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    sandbox: Sandbox | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    perf_tests: bool = True,
) -> list[Task]:
    """HumanEval+ tasks from ``path`` (default ``$EFFIRL_DATA_DIR/humanevalplus/HumanEvalPlus.jsonl.gz``).

    ``sandbox`` runs the references whose outputs are not cached yet (a default one is started
    when None and needed); ``cache_dir`` overrides the expected-output cache folder. With
    ``perf_tests`` (default) each task gets performance-exercising tests too
    (:mod:`rewards.datasets.perf_inputs`).
    """
    return load_release_tasks(
        HUMANEVALPLUS,
        path,
        split=split,
        limit=limit,
        sandbox=sandbox,
        cache_dir=cache_dir,
        timeout_s=timeout_s,
        perf_tests=perf_tests,
    )
