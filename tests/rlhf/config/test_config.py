"""The typed config: defaults, overrides, errors, recipe inheritance, dumps and the committed recipes/docs."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf.config import (
    ConfigError,
    ExperimentConfig,
    LoraConfig,
    RolloutConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    known_keys,
    load_config,
)
from rlhf.config.docs import render_config_docs

REPO = Path(__file__).resolve().parents[3]
RECIPES = sorted((REPO / "rlhf" / "recipes").glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*overrides: str, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return str(caught.value)


# Defaults and overrides


def test_defaults_are_valid_and_resolved() -> None:
    config = load_config()
    assert config == load_config(None, [])
    assert config.model.name_or_path == "builtin:smollm2-135m-instruct"
    assert config.algorithm.name == "grpo"
    assert config.run_name == "run"
    assert config.output_dir == str(Path("runs") / "run")
    assert ExperimentConfig().rollout == RolloutConfig()


def test_overrides_are_typed_by_their_key() -> None:
    config = load_config(
        None,
        [
            "rollout.n_samples=8",
            "train.lr=1e-5",
            "train.max_grad_norm=null",
            "reward.efficiency_weight=1",
            "placement.async_rollout=true",
            "data.limit=32",
        ],
    )
    assert config.rollout.n_samples == 8
    assert config.train.lr == 1e-5 and isinstance(config.train.lr, float)
    assert config.train.max_grad_norm is None
    assert config.reward.efficiency_weight == 1.0 and isinstance(config.reward.efficiency_weight, float)
    assert config.placement.async_rollout is True
    assert config.data.limit == 32


def test_override_lists_parse_as_yaml_flow_sequences() -> None:
    config = load_config(None, ["lora.target_modules=[q_proj,v_proj]", 'rollout.stop=["\\n\\n", "def "]'])
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.rollout.stop == ["\n\n", "def "]
    assert load_config(None, ["lora.target_modules=all-linear"]).lora.target_modules == "all-linear"


def test_override_text_for_a_string_key_stays_text() -> None:
    config = load_config(None, ["model.name_or_path=123", "run_name=2024", "data.dataset=no"])
    assert config.model.name_or_path == "123"
    assert config.run_name == "2024"
    assert config.data.dataset == "no"
    assert load_config(None, ["model.revision=null"]).model.revision is None


def test_later_overrides_win() -> None:
    assert load_config(None, ["train.steps=3", "train.steps=5"]).train.steps == 5


def test_malformed_override_is_named() -> None:
    assert (
        error_of("rollout.n_samples")
        == "override `rollout.n_samples` must look like key=value, e.g. rollout.n_samples=8"
    )
    assert "cannot parse the value of override `rollout.stop=[a, b`" in error_of("rollout.stop=[a, b")
    assert error_of("rollout=3") == "`rollout` is a section; set its keys, e.g. `rollout.<key>=value`"


# Errors name the key, what was expected and what was given


def test_unknown_key_suggests_the_close_match() -> None:
    assert (
        error_of("rollout.temprature=0.7")
        == "unknown key `rollout.temprature`; did you mean `rollout.temperature`?"
    )
    assert (
        error_of("train.temperature=0.7")
        == "unknown key `train.temperature`; did you mean `rollout.temperature`?"
    )
    assert (
        error_of("rolout.n_samples=2") == "unknown key `rolout.n_samples`; did you mean `rollout.n_samples`?"
    )
    assert error_of("seed=1") == "unknown key `seed`; did you mean `data.seed` or `train.seed`?"
    assert error_of("eval_evry=1") == "unknown key `eval_evry`; did you mean `eval_every`?"


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    message = error_of("lora.zzzzzz=1")
    assert message.startswith("unknown key `lora.zzzzzz`; the keys of `lora` are: rank, alpha, dropout")
    assert error_of("qqqq.zzzz=1").startswith("unknown key `qqqq.zzzz`; sections are model, lora, data")


def test_unknown_key_in_a_recipe_names_the_file(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", "rollout:\n  temprature: 0.7\n")
    assert error_of(path=recipe) == (
        f"{recipe}: unknown key `rollout.temprature`; did you mean `rollout.temperature`?"
    )


def test_wrong_types_name_key_expected_type_and_value(tmp_path: Path) -> None:
    assert error_of("rollout.n_samples=eight") == (
        "`rollout.n_samples` expects int, got 'eight' (str) (from override `rollout.n_samples=eight`)"
    )
    assert "`train.steps` expects int, got 2.5 (float)" in error_of("train.steps=2.5")
    assert "`train.steps` expects int, got true (bool)" in error_of("train.steps=true")
    assert "`lora.target_modules[1]` expects str, got 3 (int)" in error_of("lora.target_modules=[q_proj, 3]")
    recipe = write(tmp_path / "r.yaml", "run_name: 2024\n")
    assert error_of(path=recipe) == f"`run_name` expects str, got 2024 (int) (from {recipe})"


def test_enum_errors_list_the_choices_and_suggest() -> None:
    assert error_of("algorithm.name=gpro") == (
        "`algorithm.name` must be one of grpo, rloo, reinforce_plus_plus, reinforce_plus_plus_baseline, ppo; "
        "got 'gpro'; did you mean `grpo`? (from override `algorithm.name=gpro`)"
    )
    assert "`lora.target_modules` must be one of all-linear (or list[str])" in error_of(
        "lora.target_modules=all_linear"
    )
    assert "must be one of auto, cpu, cuda, cuda:N" in error_of("model.device=gpu")
    assert load_config(None, ["model.device=cuda:1"]).model.device == "cuda:1"


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("rollout.top_p=0", "`rollout.top_p` must be in (0, 1]; got 0.0 (float)"),
        ("rollout.top_p=1.5", "`rollout.top_p` must be in (0, 1]; got 1.5 (float)"),
        ("rollout.temperature=0", "`rollout.temperature` must be > 0"),
        ("lora.dropout=1.0", "`lora.dropout` must be in [0, 1)"),
        ("lora.rank=0", "`lora.rank` must be > 0"),
        ("reward.speedup_clip=1", "`reward.speedup_clip` must be > 1"),
        ("reward.timeout_penalty=0.5", "`reward.timeout_penalty` must be <= 0"),
        ("algorithm.gamma=1.5", "`algorithm.gamma` must be in [0, 1]"),
        ("train.warmup_steps=500", "`train.warmup_steps` must not exceed `train.steps` (100)"),
        (
            "rollout.eval_n_samples=4",
            "`rollout.eval_n_samples` must be 1 when `rollout.eval_temperature` is 0",
        ),
        ("placement.mode=split", "`placement.sync` cannot be `inplace` when `placement.mode` is `split`"),
        ("reward.service_url=localhost:8000", "`reward.service_url` must be an http:// or https:// URL"),
        ("model.name_or_path=tiny:", "`model.name_or_path` needs a name after `tiny:`"),
    ],
)
def test_out_of_range_values_are_rejected(override: str, problem: str) -> None:
    assert problem in error_of(override)


def test_top_p_of_one_is_allowed() -> None:
    assert load_config(None, ["rollout.top_p=1"]).rollout.top_p == 1.0


def test_rules_across_sections() -> None:
    assert "`rollout.n_samples` must be >= 2 for `algorithm.name` grpo" in error_of("rollout.n_samples=1")
    assert "`rollout.n_samples` must be >= 2 for `algorithm.name` rloo" in error_of(
        "algorithm.name=rloo", "rollout.n_samples=1"
    )
    ppo = load_config(None, ["algorithm.name=ppo", "rollout.n_samples=1"])
    assert ppo.rollout.n_samples == 1
    assert (
        "`algorithm.overlong_buffer` (256) must be smaller than `rollout.max_new_tokens` (256)"
        in error_of("algorithm.overlong_buffer=256")
    )
    assert "`train.mini_batches` (17) must not exceed the samples per step" in error_of(
        "train.mini_batches=17"
    )
    assert "when `model.device` is cpu" in error_of("model.device=cpu", "placement.num_gpus_per_worker=1")
    assert "when `reward.efficiency_mode` is group" in error_of(
        "algorithm.name=ppo", "rollout.n_samples=1", "reward.efficiency_mode=group"
    )


def test_sections_built_in_python_are_checked_too() -> None:
    with pytest.raises(ConfigError) as caught:
        RolloutConfig(top_p=2.0)
    assert caught.value.key == "rollout.top_p"
    with pytest.raises(ConfigError, match=re.escape("`lora.rank` expects int, got '8' (str)")):
        LoraConfig(rank="8")  # type: ignore[arg-type]
    assert RolloutConfig(temperature=1).temperature == 1.0
    config = ExperimentConfig()
    config.rollout.n_samples = 1
    with pytest.raises(ConfigError, match="must be >= 2"):
        config.validate()


# Recipe files and inheritance


def test_recipe_keys_override_defaults_and_name_the_run(tmp_path: Path) -> None:
    recipe = write(tmp_path / "mine.yaml", "rollout:\n  n_samples: 6\ntrain:\n  lr: 1e-5\nlora:\n")
    config = load_config(recipe)
    assert config.rollout.n_samples == 6
    assert config.rollout.temperature == RolloutConfig().temperature
    assert config.train.lr == 1e-5
    assert config.lora == LoraConfig()
    assert config.run_name == "mine"
    assert config.output_dir == str(Path("runs") / "mine")
    named = write(tmp_path / "named.yaml", "run_name: exp1\noutput_dir: /tmp/exp\n")
    assert (load_config(named).run_name, load_config(named).output_dir) == ("exp1", "/tmp/exp")


def test_empty_recipe_gives_the_defaults(tmp_path: Path) -> None:
    recipe = write(tmp_path / "empty.yaml", "# nothing set\n")
    assert load_config(recipe) == load_config(None, ["run_name=empty"])


def test_recipe_extends_its_bases_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    write(
        tmp_path / "common" / "grand.yaml",
        "rollout:\n  n_samples: 8\n  max_new_tokens: 64\nlora:\n  target_modules: [q_proj, k_proj]\n",
    )
    write(
        tmp_path / "common" / "parent.yaml",
        "base: grand.yaml\nrollout:\n  max_new_tokens: 128\ntrain:\n  steps: 7\n",
    )
    child = write(
        tmp_path / "child.yaml",
        "base: common/parent.yaml\nrollout:\n  temperature: 0.5\nlora:\n  target_modules: [v_proj]\n",
    )
    config = load_config(child, ["train.steps=9"])
    assert config.rollout.n_samples == 8  # from the grandparent
    assert config.rollout.max_new_tokens == 128  # the parent wins over the grandparent
    assert config.rollout.temperature == 0.5  # the child's own key
    assert config.lora.target_modules == ["v_proj"]  # lists replace, not append
    assert config.train.steps == 9  # overrides win over every file
    assert config.run_name == "child"


def test_several_bases_merge_in_order_and_defaults_is_a_synonym(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "train:\n  steps: 3\n  lr: 0.001\n")
    write(tmp_path / "b.yaml", "train:\n  steps: 4\n")
    child = write(tmp_path / "c.yaml", "defaults: [a.yaml, b.yaml]\n")
    config = load_config(child)
    assert (config.train.steps, config.train.lr) == (4, 0.001)
    both = write(tmp_path / "both.yaml", "base: a.yaml\ndefaults: b.yaml\n")
    assert error_of(path=both) == f"{both}: use either `base` or `defaults`, not both"


def test_errors_in_a_base_name_the_base_file(tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", "train:\n  steps: many\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\n")
    assert error_of(path=child) == f"`train.steps` expects int, got 'many' (str) (from {base})"


def test_inheritance_cycles_and_missing_bases_are_errors(tmp_path: Path) -> None:
    write(tmp_path / "x.yaml", "base: y.yaml\n")
    write(tmp_path / "y.yaml", "base: x.yaml\n")
    assert "recipes extend each other in a cycle" in error_of(path=tmp_path / "x.yaml")
    orphan = write(tmp_path / "orphan.yaml", "base: nowhere.yaml\n")
    assert error_of(path=orphan) == f"recipe not found: {tmp_path / 'nowhere.yaml'}"
    assert error_of(path=tmp_path / "quickstart") == (
        f"recipe not found: {tmp_path / 'quickstart'} (did you forget `.yaml`?)"
    )


def test_yaml_is_read_the_yaml_1_2_way(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", "run_name: no\ntrain:\n  lr: 3e-4\ndata:\n  dataset: on\n")
    config = load_config(recipe)
    assert (config.run_name, config.train.lr, config.data.dataset) == ("no", 3e-4, "on")


def test_bad_recipe_files_give_one_line_errors(tmp_path: Path) -> None:
    dup = write(tmp_path / "dup.yaml", "train:\n  steps: 1\ntrain:\n  steps: 2\n")
    assert "duplicate key 'train' (the later one would silently win) (line 3)" in error_of(path=dup)
    broken = write(tmp_path / "broken.yaml", "train: [1, 2\n")
    message = error_of(path=broken)
    assert message.startswith(f"{broken}: invalid YAML: ") and "\n" not in message
    scalar = write(tmp_path / "scalar.yaml", "just text\n")
    assert error_of(path=scalar) == f"{scalar}: a recipe must be a mapping of keys, got 'just text' (str)"
    section = write(tmp_path / "section.yaml", "rollout: 8\n")
    assert error_of(path=section) == (
        f"{section}: `rollout` is a section and must be a mapping of its keys, got 8 (int)"
    )


# Dumps


def test_dump_then_load_gives_an_equal_config(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "run_name=1e5",
            "model.name_or_path=yes",
            "lora.target_modules=[q_proj, v_proj]",
            'rollout.stop=["\\n```", "null", "true"]',
            "train.lr=3e-6",
            "data.limit=5",
            "resume=auto",
        ],
    )
    path = write(tmp_path / "dumped.yaml", dump_config(config))
    assert load_config(path) == config
    assert config_from_dict(config_to_dict(config)) == config
    assert yaml.safe_load(dump_config(config))["rollout"]["stop"] == ["\n```", "null", "true"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_round_trips(recipe: Path, tmp_path: Path) -> None:
    config = load_config(recipe)
    assert config.run_name == recipe.stem
    dumped = write(tmp_path / "dumped.yaml", dump_config(config))
    assert load_config(dumped) == config


def test_the_recipes_the_docs_promise_exist() -> None:
    names = {p.name for p in RECIPES}
    assert {
        "quickstart.yaml",
        "smoke.yaml",
        "grpo_humanevalplus.yaml",
        "ppo_mbppplus.yaml",
        "rloo_humanevalplus.yaml",
        "gpu_qwen2.5_coder_1.5b.yaml",
    } <= names


def test_quickstart_is_a_small_cpu_grpo_run() -> None:
    config = load_config(REPO / "rlhf" / "recipes" / "quickstart.yaml")
    assert config.model.name_or_path == "builtin:smollm2-135m-instruct"
    assert config.model.device == "cpu"
    assert (config.lora.rank, config.algorithm.name) == (16, "grpo")
    assert config.data.dataset == "synthetic_optimise" and config.data.prompt_style == "chat_fence"
    assert config.data.prompts_per_step * config.rollout.n_samples == 16
    assert config.rollout.max_new_tokens <= 128
    # a copy of the shown slow code must not pay: it earns 1 - 1 = 0, measured in CPU time
    assert config.reward.efficiency_weight == 1.0 and config.reward.cost_measure == "cpu"
    assert load_config(REPO / "rlhf" / "recipes" / "quickstart_gpu.yaml").model.device == "cuda"


def test_smoke_and_gpu_recipes() -> None:
    smoke = load_config(REPO / "rlhf" / "recipes" / "smoke.yaml")
    assert smoke.model.name_or_path == "tiny:llama"
    assert smoke.train.steps <= 3 and smoke.model.device == "cpu"
    gpu = load_config(REPO / "rlhf" / "recipes" / "gpu_qwen2.5_coder_1.5b.yaml")
    assert gpu.model.name_or_path == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert (gpu.model.dtype, gpu.model.device, gpu.rollout.engine, gpu.train.bf16) == (
        "bfloat16",
        "cuda",
        "fast",
        True,
    )
    rloo = load_config(REPO / "rlhf" / "recipes" / "rloo_humanevalplus.yaml")
    assert (rloo.algorithm.name, rloo.data.eval_dataset) == ("rloo", "humanevalplus")
    assert load_config(REPO / "rlhf" / "recipes" / "ppo_mbppplus.yaml").algorithm.name == "ppo"


# Docs


def test_committed_docs_are_up_to_date() -> None:
    committed = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == render_config_docs(), (
        "docs/config.md is stale; run: python scripts/gen_config_docs.py"
    )


def test_docs_cover_every_key_with_help() -> None:
    docs = render_config_docs()
    for key in known_keys():
        assert f"`{key}`" in docs, key
    config = ExperimentConfig()
    for owner in (config, *config.sections().values()):
        for f in dataclasses.fields(owner):
            assert f.metadata.get("help") or f.name in config.sections(), f"`{f.name}` has no help text"


def test_docs_script_checks_and_writes(tmp_path: Path) -> None:
    script = [sys.executable, str(REPO / "scripts" / "gen_config_docs.py")]
    out = tmp_path / "config.md"
    assert subprocess.run([*script, "--check", "--out", str(out)], capture_output=True).returncode == 1
    assert subprocess.run([*script, "--out", str(out)], capture_output=True).returncode == 0
    assert out.read_text(encoding="utf-8") == render_config_docs()
    assert subprocess.run([*script, "--check", "--out", str(out)], capture_output=True).returncode == 0
