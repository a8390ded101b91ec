"""Evaluation of models, adapters and checkpoints: pass@k, efficiency metrics, comparisons, reports.

    effirl eval --checkpoint runs/x/checkpoints/step-200 --benchmark humanevalplus --out results/x
    effirl eval --model builtin:smollm2-135m-instruct --benchmark humanevalplus --out results/base
    effirl eval --checkpoint ... --benchmark humanevalplus --out results/x --compare results/base

Modules: ``metrics`` (pass@k, eff@k, normalised costs; pure functions), ``records`` (results.json),
``generation`` (loading the policy, sampling), ``scoring`` (sandbox verdicts and costs),
``compare`` (side by side), ``report`` (report.md and plots), ``command`` (the CLI entry point).
See docs/evaluation.md.
"""

from rlhf.evaluation.command import run_evaluation
from rlhf.evaluation.compare import Comparison, compare_results, verdict_of
from rlhf.evaluation.metrics import eff_at_k, enamel_score, pass_at_k
from rlhf.evaluation.records import EvaluationResult, SampleRecord

__all__ = [
    "Comparison",
    "EvaluationResult",
    "SampleRecord",
    "compare_results",
    "eff_at_k",
    "enamel_score",
    "pass_at_k",
    "run_evaluation",
    "verdict_of",
]
