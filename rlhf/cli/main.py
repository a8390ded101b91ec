"""The ``effirl`` command line.

    effirl train RECIPE [key=value ...] [--resume|--overwrite]  RL-train a LoRA adapter
                                                       (RECIPE: a file or a built-in name)
    effirl sft RECIPE [key=value ...]                  supervised warm-up on reference solutions
    effirl eval --benchmark B --out DIR [--model M] [--adapter|--checkpoint|--run ...]
                                                       pass@k, eff@k and speedups; reports and plots
    effirl export CHECKPOINT --out DIR [--merge|--with-base]   write an adapter or a merged model
    effirl reward serve [--host] [--port] ...          the HTTP reward service (its flags: --help)
    effirl data download humanevalplus|mbppplus        fetch EvalPlus release files (data: --help)
    effirl data show SOURCE [--columns ...]            load a dataset and report its tasks
    effirl data perf-inputs DATASET [--tasks ...]      build and print a dataset's perf inputs
    effirl sandbox check|audit                         what the sandbox can do on this machine
    effirl config show [RECIPE] [key=value ...]        print the resolved config
    effirl config recipes                              list the built-in recipes
    effirl config docs [--out FILE]                    print the configuration reference

Commands other than ``config`` live in their own modules and are imported only when run (see
``ENTRY_POINTS`` in rlhf/cli/entry_points.py), so ``effirl config`` stays fast and works without the
training stack.
``effirl reward serve`` hands its arguments to the reward service's own command line
(``rewards.service.command``, also ``python -m rewards.service``), which defines its flags.
Exit codes: 0 success, 1 failure, 2 a usage or configuration error: a user's error
(``rewards.user_error.UserError``) is reported on one line naming the problem and the fix;
``--debug`` (or ``EFFIRL_DEBUG=1``) prints its traceback too. ``-v``/``-q`` (anywhere on the line)
set how much is said (rewards/console.py).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewards.console import configure_logging, pop_verbosity
from rewards.user_error import UserError, debug_requested, report_user_error
from rlhf.cli.entry_points import DELEGATED, CommandUnavailable, resolve_entry_point
from rlhf.cli.sandbox_command import add_sandbox_commands
from rlhf.config import ExperimentConfig, builtin_recipes, dump_config, load_config
from rlhf.config.docs import render_config_docs
from rlhf.config.recipes import recipe_summary

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEBUG_FLAG = "--debug"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    A user's error (:class:`UserError`, which ConfigError is) is one line on stderr and exit status
    2; ``--debug`` anywhere in ``argv`` (or ``EFFIRL_DEBUG=1``) prints its traceback first.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or debug_requested()
    argv = [a for a in argv if a != DEBUG_FLAG]
    argv, verbosity = pop_verbosity(argv)
    configure_logging(verbosity or 0)
    for command in DELEGATED:
        words = command.split()
        if argv[: len(words)] == words:
            return _run_delegated(command, argv[len(words) :], debug=debug)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command_parser: argparse.ArgumentParser = getattr(args, "command_parser", parser)
    if extra:
        # Overrides may follow options (`train r.yaml --resume a=1`); argparse leaves those over.
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides.extend(extra)
        else:
            command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "run"):
        command_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.run(args)
    except UserError as exc:
        return report_user_error(exc, "effirl", debug=debug)
    except CommandUnavailable as exc:
        print(f"effirl: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("effirl: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``effirl`` and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="effirl",
        description="RL fine-tuning that teaches code LLMs to write code that is correct and efficient.",
        epilog="Run `effirl COMMAND --help` for a command's options and `effirl config docs` for every "
        "config key.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"effirl {_version()}")
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help="show the traceback of an error too (anywhere on the line; or set EFFIRL_DEBUG=1)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="say more: -v adds details (INFO), -vv everything (DEBUG); anywhere on the line",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="count",
        help="say less: -q only warnings and errors, no progress bars; -qq errors only",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    train = _command(
        commands,
        "train",
        "RL-train a LoRA adapter with a recipe",
        "Train the policy's LoRA adapter with the algorithm, data and rewards of RECIPE (a recipe file, "
        "or a built-in recipe's name: `effirl config recipes` lists them).",
        "effirl train quickstart            # quickstart_gpu when a GPU is present\n"
        "  effirl train grpo_humanevalplus train.steps=200 rollout.n_samples=8\n"
        "  effirl train my_recipe.yaml\n"
        "  effirl train quickstart --resume      # continue the run in its output_dir\n"
        "  effirl train quickstart --overwrite   # start over; the old run is moved aside",
    )
    _recipe_arguments(train, required=True)
    train.add_argument(
        "--resume",
        action="store_true",
        help="resume from the newest checkpoint in the run's output_dir (same as resume=auto; "
        "resume=PATH picks a checkpoint); an error when it has none",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an output_dir that holds an earlier run, after moving the earlier "
        "run aside to <output_dir>.old-<time> (same as overwrite=true); without it or --resume such "
        "a folder is refused",
    )
    train.set_defaults(run=_run_train)

    sft = _command(
        commands,
        "sft",
        "supervised warm-up on reference solutions",
        "Fine-tune the LoRA adapter on the tasks' reference solutions (a warm start for RL; point "
        "lora.adapter_path at its output).",
        "effirl sft quickstart train.steps=50",
    )
    _recipe_arguments(sft, required=True)
    sft.set_defaults(run=_run_sft)

    evaluate = _command(
        commands,
        "eval",
        "evaluate a model, adapter, checkpoint or run",
        "Sample solutions for a benchmark's tasks, run them in the sandbox, and report pass@k (on base "
        "and on extra tests), eff@k, speedups and normalised cost over the reference solutions. Writes "
        "results.json, report.md and plots to --out. Without --adapter/--checkpoint/--run the base "
        "model itself is evaluated.",
        "effirl eval --checkpoint runs/quickstart/checkpoints/step-200 --benchmark synthetic --out eval/q\n"
        "  effirl eval --model builtin:smollm2-135m-instruct --benchmark humanevalplus --limit 40 \\\n"
        "      --out eval/base\n"
        "  effirl eval --run runs/quickstart --all-checkpoints --benchmark synthetic --out eval/steps\n"
        "  effirl eval --adapter exported/q --model builtin:smollm2-135m-instruct \\\n"
        "      --benchmark humanevalplus \\\n"
        "      --n-samples 10 --temperature 0.8 --out eval/tuned --compare eval/base",
    )
    source = evaluate.add_argument_group("what to evaluate")
    source.add_argument("--model", metavar="BASE", help="base model (default: the checkpoint's or run's)")
    which = source.add_mutually_exclusive_group()
    which.add_argument("--adapter", metavar="DIR", help="a PEFT adapter folder (e.g. `effirl export` output)")
    which.add_argument("--checkpoint", metavar="DIR", help="a checkpoint folder (<run>/checkpoints/step-N)")
    which.add_argument(
        "--run", dest="run_dir", metavar="RUN_DIR", help="a run folder: its newest checkpoint, or all of them"
    )
    source.add_argument(
        "--all-checkpoints",
        action="store_true",
        help="with --run: evaluate the base (step 0) and every checkpoint, and plot metrics vs step",
    )
    data = evaluate.add_argument_group("benchmark and sampling")
    data.add_argument(
        "--benchmark",
        required=True,
        metavar="NAME|PATH",
        help="humanevalplus, mbppplus, humaneval, synthetic, synthetic_optimise, or a task file",
    )
    data.add_argument(
        "--split",
        help="dataset split, or several comma-separated (default: the dataset's; heldout for synthetic; "
        "heldout,heldout_families for both held-out splits)",
    )
    data.add_argument("--limit", type=int, metavar="N", help="evaluate the first N tasks only")
    data.add_argument("--n-samples", type=int, default=1, metavar="K", help="samples per task (default: 1)")
    data.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        metavar="T",
        help="0 is greedy (default); >0 for --n-samples > 1",
    )
    data.add_argument(
        "--top-p", type=float, default=0.95, help="nucleus sampling mass when T > 0 (default: 0.95)"
    )
    data.add_argument("--max-new-tokens", type=int, default=512, help="longest completion (default: 512)")
    data.add_argument(
        "--prompt-style",
        default="chat_fence",
        choices=("chat", "chat_fence", "chat_prefill", "raw"),
        help="how tasks become prompts (default: chat_fence)",
    )
    data.add_argument(
        "--batch-size",
        type=int,
        help="prompts per engine call (default: 8 with generate, 64 with the fast engine)",
    )
    data.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "generate", "fast"),
        help="generation engine: fast (effirl's decoder), generate (transformers), or auto: fast on a "
        "GPU when it supports the model (default: auto)",
    )
    data.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    data.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:N (default: auto)")
    measure = evaluate.add_argument_group("execution and output")
    measure.add_argument(
        "--cost",
        default="cpu",
        choices=("cpu", "python_events", "instructions", "callgrind"),
        help="cost measure: cpu (CPU time, default), python_events (deterministic), instructions (perf "
        "counters), callgrind (exact instruction counts under valgrind; slow)",
    )
    measure.add_argument(
        "--repeats", type=int, default=1, help="runs per solution; the median counts (default: 1)"
    )
    measure.add_argument(
        "--timeout-s", type=float, default=10.0, help="time limit of one solution (default: 10)"
    )
    measure.add_argument("--workers", type=int, help="sandbox processes (default: one per CPU core)")
    measure.add_argument(
        "--out", metavar="DIR", required=True, help="folder for results.json, report.md, plots"
    )
    measure.add_argument(
        "--compare",
        metavar="RESULT_DIR",
        help="an earlier `effirl eval` --out to compare with: the solutions of tasks both solve are "
        "measured again side by side, interleaved on one sandbox worker",
    )
    measure.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="relative speed difference that still counts as equal in --compare (default: 0.05)",
    )
    measure.add_argument(
        "--rescore",
        metavar="RESULT_DIR",
        help="score the completions of an earlier `effirl eval` --out again instead of generating (no "
        "model is loaded): generate where the GPU is, measure costs where the machine is quiet",
    )
    measure.add_argument(
        "--generate-only",
        action="store_true",
        help="write the completions without running them (score them later with --rescore)",
    )
    measure.add_argument(
        "--compare-rounds",
        type=int,
        default=10,
        help="interleaved runs of each side in --compare with a noisy cost (cpu, instructions); a "
        "difference also needs a sign test at 5%% over them (default: 10)",
    )
    evaluate.set_defaults(run=_run_eval)

    export = _command(
        commands,
        "export",
        "export a checkpoint's adapter or a merged model",
        "Write a checkpoint's LoRA adapter as a standalone PEFT adapter, or with --merge the base model "
        "with the adapter merged in, loadable by transformers and vLLM without effirl.",
        "effirl export runs/quickstart/checkpoints/step-200 --out exported/quickstart\n"
        "  effirl export runs/quickstart --out exported/quickstart --with-base   # + DIR/base\n"
        "  effirl export runs/quickstart --out exported/merged --merge --dtype bf16",
    )
    export.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="checkpoint directory written by `effirl train` (a run directory: its newest checkpoint)",
    )
    export.add_argument("--out", metavar="DIR", required=True, help="directory to write (created if missing)")
    export.add_argument("--merge", action="store_true", help="merge the adapter into the base weights")
    export.add_argument(
        "--dtype",
        choices=("auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32"),
        default="auto",
        help="precision of the written weights (default: auto, the checkpoint's own)",
    )
    export.add_argument(
        "--base",
        metavar="MODEL",
        help="the base model you expect; refused unless the checkpoint was trained on it",
    )
    export.add_argument(
        "--with-base",
        action="store_true",
        help="also write the base model the adapter was trained on (for the built-in model: its "
        "dequantised GGUF weights) to DIR/base, so the adapter loads offline with plain transformers "
        "+ peft",
    )
    export.set_defaults(run=_run_export)

    reward = _command(
        commands, "reward", "the reward service", "Serve rewards over HTTP for other processes or machines."
    )
    reward_commands = reward.add_subparsers(title="commands", metavar="COMMAND")
    _command(
        reward_commands,
        "serve",
        "serve rewards over HTTP",
        "Score completions over HTTP with local sandbox workers; training runs use it through "
        "reward.service_url. Every ServiceConfig and RewardSettings field is a flag: run "
        "`effirl reward serve --help` (the same command as `python -m rewards.service`).",
        "effirl reward serve --port 8080 --workers 8",
    )

    _command(
        commands,
        "data",
        "download datasets, check how effirl reads them",
        "Fetch the EvalPlus release files into $EFFIRL_DATA_DIR (with their checksums), load a dataset "
        "through a layout or a column mapping and report its tasks, list the layouts: run "
        "`effirl data --help`.",
        "effirl data download humanevalplus\n  effirl data show evalplus/mbppplus --limit 5",
    )

    add_sandbox_commands(commands, _command)

    config = _command(
        commands, "config", "show resolved configs and the config reference", "Inspect configurations."
    )
    config_commands = config.add_subparsers(title="commands", metavar="COMMAND")
    show = _command(
        config_commands,
        "show",
        "print the resolved config of a recipe",
        "Print the fully resolved config (recipe, its bases, defaults and overrides) as YAML; the output "
        "is itself a recipe.",
        "effirl config show smoke rollout.n_samples=3\n"
        "  effirl config show train.steps=10        # the defaults with one override",
    )
    _recipe_arguments(show, required=False)
    show.set_defaults(run=_run_config_show)
    docs = _command(
        config_commands,
        "docs",
        "print the configuration reference",
        "Print the reference of every config key (the text of docs/config.md) as Markdown.",
    )
    docs.add_argument("--out", metavar="FILE", help="write to FILE instead of printing")
    docs.set_defaults(run=_run_config_docs)
    recipes = _command(
        config_commands,
        "recipes",
        "list the built-in recipes",
        "List the recipes that ship with effirl: `effirl train NAME` runs one (a bare name takes its "
        "GPU variant, NAME_gpu, when a GPU is present). `effirl config show NAME` prints one in full.",
    )
    recipes.set_defaults(run=_run_config_recipes)
    return parser


def _command(
    commands: Any, name: str, summary: str, description: str, examples: str | None = None
) -> argparse.ArgumentParser:
    command = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, width=88),
        epilog=f"examples:\n  {examples}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.set_defaults(command_parser=command)
    return command


def _recipe_arguments(command: argparse.ArgumentParser, *, required: bool) -> None:
    command.add_argument(
        "recipe",
        metavar="RECIPE",
        nargs=None if required else "?",
        help="a YAML recipe file, or a built-in recipe's name (`effirl config recipes`)"
        + ("" if required else "; leave out to start from the defaults"),
    )
    command.add_argument(
        "overrides",
        metavar="key=value",
        nargs="*",
        help="override a config key, e.g. rollout.n_samples=8 or lora.target_modules=[q_proj,v_proj]",
    )


def _config_of(args: argparse.Namespace, extra: Sequence[str] = ()) -> ExperimentConfig:
    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe and not Path(recipe).exists():
        recipe, overrides = None, [recipe, *overrides]
    return load_config(recipe, [*overrides, *extra])


def _exit_code(result: Any) -> int:
    return EXIT_OK if result is None else int(result)


def _run_train(args: argparse.Namespace) -> int:
    flags = (["resume=auto"] if args.resume else []) + (["overwrite=true"] if args.overwrite else [])
    config = _config_of(args, flags)
    return _exit_code(resolve_entry_point("train")(config))


def _run_sft(args: argparse.Namespace) -> int:
    return _exit_code(resolve_entry_point("sft")(_config_of(args)))


EVAL_OPTIONS = (
    "benchmark",
    "out",
    "model",
    "adapter",
    "checkpoint",
    "all_checkpoints",
    "split",
    "limit",
    "n_samples",
    "temperature",
    "top_p",
    "max_new_tokens",
    "prompt_style",
    "batch_size",
    "engine",
    "cost",
    "repeats",
    "timeout_s",
    "workers",
    "seed",
    "device",
    "compare",
    "tolerance",
    "compare_rounds",
    "rescore",
    "generate_only",
)


def _run_eval(args: argparse.Namespace) -> int:
    evaluate = resolve_entry_point("eval")
    # `--run` is stored as run_dir: `args.run` is the command's handler.
    options = {name: getattr(args, name) for name in EVAL_OPTIONS}
    return _exit_code(evaluate(run=args.run_dir, **options))


def _run_export(args: argparse.Namespace) -> int:
    export = resolve_entry_point("export")
    return _exit_code(
        export(
            args.checkpoint,
            out=args.out,
            merge=args.merge,
            dtype=args.dtype,
            base=args.base,
            with_base=args.with_base,
        )
    )


def _run_delegated(command: str, argv: list[str], *, debug: bool = False) -> int:
    """Run a command whose own module parses ``argv`` (see DELEGATED)."""
    try:
        run = resolve_entry_point(command)
    except CommandUnavailable as exc:
        print(f"effirl: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        return _exit_code(run(argv, prog=f"effirl {command}"))
    except UserError as exc:
        return report_user_error(exc, f"effirl {command}", debug=debug)
    except KeyboardInterrupt:
        print("effirl: interrupted", file=sys.stderr)
        return 130


def _run_config_show(args: argparse.Namespace) -> int:
    sys.stdout.write(dump_config(_config_of(args)))
    return EXIT_OK


def _run_config_recipes(args: argparse.Namespace) -> int:
    found = builtin_recipes()
    width = max(map(len, found), default=0)
    for name, path in found.items():
        print(f"{name.ljust(width)}  {recipe_summary(path)}")
    return EXIT_OK


def _run_config_docs(args: argparse.Namespace) -> int:
    text = render_config_docs()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _version() -> str:
    try:
        return importlib.metadata.version("effirl")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed as a package)"


if __name__ == "__main__":
    sys.exit(main())
