"""The recipes in ``configs/`` are valid configurations of the command their header runs: the
header runs the recipe itself (a copied recipe that still runs its original is a trap), and
every recipe it runs loads as its command. The recipes need the internet and a GPU; the guide's
walk runs the open-model ones offline on small random stand-ins (docs/guide/07-open-models.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scratchgpt.finetune.config import ClassifyConfig, DPOConfig, InstructConfig
from scratchgpt.pretraining import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
LOADERS = {
    "pretrain": lambda path: load_config(path, {}),
    "finetune classify": lambda path: ClassifyConfig.from_sources(path, {}),
    "finetune instruct": lambda path: InstructConfig.from_sources(path, {}),
    "finetune dpo": lambda path: DPOConfig.from_sources(path, {}),
}


@pytest.mark.parametrize("recipe", CONFIGS, ids=lambda path: path.name)
def test_a_recipe_loads_as_the_command_it_documents(recipe: Path) -> None:
    header = recipe.read_text(encoding="utf-8")
    runs = re.findall(r"scratchgpt (pretrain|finetune \w+) --config (\S+)", header)
    assert runs, f"{recipe.name}: its header shows no `scratchgpt ... --config` command"
    assert f"configs/{recipe.name}" in {path for _, path in runs}, f"{recipe.name} runs {runs}"
    root = recipe.parents[1]
    for command, path in runs:  # itself, and any recipe it builds on
        LOADERS[command](root / path)


def test_the_open_model_recipes_train_lora_on_every_projection() -> None:
    for name in ("qwen3-0.6b-ch6-lora", "llama-3.2-1b-ch6-lora"):
        config = ClassifyConfig.from_sources(CONFIGS[0].parent / f"{name}.toml", {})
        assert (config.model.train, config.model.lora_targets) == ("lora", "all")
    for name in ("qwen3-0.6b-ch7-lora", "llama-3.2-1b-ch7-lora"):
        config = InstructConfig.from_sources(CONFIGS[0].parent / f"{name}.toml", {})
        assert (config.model.train, config.data.prompt_style) == ("lora", "template")
