"""Datasets of coding tasks, all yielding :class:`rewards.tasks.Task`.

    from rewards.datasets import load_tasks, save_tasks
    tasks = load_tasks("mbppplus", limit=20)          # names: humanevalplus, mbppplus, humaneval, synthetic
    save_tasks(tasks, "mbpp20.jsonl")                 # effirl's task-file schema (see task_files.py)
    assert load_tasks("mbpp20.jsonl") == tasks

HumanEval+ and MBPP+ ship inputs without outputs: their expected outputs come from running the
reference solution in the sandbox once, cached under ``$EFFIRL_CACHE`` (see expected_outputs.py).
Their perf tests (performance-exercising inputs grown from the plus inputs) are cached alike
(perf_inputs.py).
"""

from rewards.datasets.columns import LAYOUTS, load_mapped_tasks
from rewards.datasets.expected_outputs import (
    ExpectedOutputCache,
    ReferenceCall,
    ReferenceFailed,
    ReferenceOutputs,
    compute_expected_outputs,
)
from rewards.datasets.humaneval import load_humaneval
from rewards.datasets.humanevalplus import load_humanevalplus
from rewards.datasets.layouts import parse_evalplus_test  # registers the published layouts
from rewards.datasets.mbppplus import load_mbppplus
from rewards.datasets.perf_inputs import PerfSettings, add_perf_tests, derive_perf_inputs
from rewards.datasets.registry import (
    check_training_tasks,
    dataset_names,
    derives_perf_tests,
    evaluation_split,
    heldout_splits,
    load_synthetic,
    load_tasks,
    register_dataset,
)
from rewards.datasets.task_files import (
    TaskFormatError,
    load_task_dataset,
    load_task_file,
    save_tasks,
    task_from_record,
    task_to_record,
)

__all__ = [
    "LAYOUTS",
    "ExpectedOutputCache",
    "PerfSettings",
    "ReferenceCall",
    "ReferenceFailed",
    "ReferenceOutputs",
    "TaskFormatError",
    "add_perf_tests",
    "check_training_tasks",
    "compute_expected_outputs",
    "dataset_names",
    "derive_perf_inputs",
    "derives_perf_tests",
    "evaluation_split",
    "heldout_splits",
    "load_humaneval",
    "load_humanevalplus",
    "load_mapped_tasks",
    "load_mbppplus",
    "load_synthetic",
    "load_task_dataset",
    "load_task_file",
    "load_tasks",
    "parse_evalplus_test",
    "register_dataset",
    "save_tasks",
    "task_from_record",
    "task_to_record",
]
