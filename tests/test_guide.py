"""The guide (``docs/guide/``) cannot go stale: every command in its ``bash`` blocks is run here.

The chapters run in order, in one fresh working directory whose parent holds ``shared/`` (so
the guide's ``../shared/assets/...`` paths work as they do beside a clone), each command line
as the guide shows it, through ``bash``. Two things make that quick, and neither changes what
the guide shows: ``SCRATCHGPT_MAX_STEPS`` caps every training command at a few steps
(``scratchgpt.training.runner``), and the cache is private to the test. A line ending in
`` &`` starts a server in the background, stopped when its chapter ends; commands that need
the internet are kept out of ``bash`` blocks by the guide.

The Hugging Face models that chapter 7 downloads by their real names come from a hub on
127.0.0.1 (tests/file_server.py's ``HubServer``, reached through ``SCRATCHGPT_BASE_URL``), which
serves under those names small random models of the same families (tests/open_model_dirs.py);
Llama's is gated there as on the hub, and the walk's ``HF_TOKEN`` opens it.

The walk through the guide takes minutes (some 90 commands, each starting Python and PyTorch),
so it is marked ``guide`` and left out of the quick suite: ``.ci/run`` runs it after the suite,
``python -m pytest -q -m guide`` here.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from file_server import HubRepo, Route, hub_servers

from scratchgpt.hub.download import BASE_URL_ENV
from scratchgpt.hub.hf_hub import TOKEN_ENV
from scratchgpt.training.runner import STEP_CAP_ENV, step_cap

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide"
CHAPTERS = sorted(GUIDE.glob("[0-9][0-9]-*.md"))
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
COMMAND_TIMEOUT_S = 240
# The hub models chapter 7 names, each served as a small random model of its family
# (open_model_dirs.FAMILIES); the gated one asks for HUB_TOKEN, as the hub asks for yours.
HUB_MODELS = {"Qwen/Qwen3-0.6B": "qwen3", "meta-llama/Llama-3.2-1B": "llama",
              "meta-llama/Llama-3.2-1B-Instruct": "llama"}
GATED = {"meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct"}
HUB_TOKEN = "hf_guide_walk"


def guide_commands(chapter: Path) -> list[str]:
    """The command lines of a chapter's ``bash`` blocks: continued lines joined, comments and
    blank lines left out."""
    commands = []
    for block in BASH_BLOCK.findall(chapter.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def stand_in_repos(directory: Path) -> dict[str, HubRepo]:
    """A small random model of each of HUB_MODELS' families, as the hub holds it: the weights
    and tokenizer.json in LFS (served through its CDN), the rest plain."""
    from open_model_dirs import FAMILIES, write_model_dir  # transformers: a dev dependency

    repos = {}
    for name, family in HUB_MODELS.items():
        model_dir = directory / name.replace("/", "--")
        write_model_dir(model_dir, FAMILIES[family])
        files = {path.name: Route(path.read_bytes(), lfs=path.suffix == ".safetensors"
                                  or path.name == "tokenizer.json")
                 for path in sorted(model_dir.iterdir())}
        repos[name] = HubRepo(files=files, token=HUB_TOKEN if name in GATED else None)
    return repos


@pytest.fixture(scope="module")
def stand_in_hub(shared_assets: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a hub on 127.0.0.1 serving HUB_MODELS' stand-ins."""
    with hub_servers() as start:
        yield start(stand_in_repos(tmp_path_factory.mktemp("hub-models"))).url


def test_the_guide_has_its_chapters_and_commands() -> None:
    assert [c.name[:3] for c in CHAPTERS] == [f"{i:02d}-" for i in range(1, 8)], CHAPTERS
    for chapter in CHAPTERS:
        assert guide_commands(chapter), f"{chapter.name} has no ```bash commands"
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", chapter.read_text(encoding="utf-8")):
            assert (chapter.parent / image).is_file(), f"{chapter.name}: {image} is missing"


def test_the_step_cap_is_read_strictly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STEP_CAP_ENV, raising=False)
    assert step_cap() is None
    monkeypatch.setenv(STEP_CAP_ENV, "3")
    assert step_cap() == 3
    for bad in ("0", "-1", "three"):
        monkeypatch.setenv(STEP_CAP_ENV, bad)
        with pytest.raises(ValueError, match=STEP_CAP_ENV):
            step_cap()


@pytest.mark.guide
def test_every_command_of_the_guide_runs(shared_assets: Path, stand_in_hub: str,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("guide")
    (root / "shared").symlink_to(shared_assets.parent)
    work = root / "work"
    work.mkdir()
    # the recipes, where a reader working in the clone's root has them
    (work / "configs").symlink_to(GUIDE.parents[1] / "configs")
    env = {**os.environ, STEP_CAP_ENV: "3", "SCRATCHGPT_CACHE": str(root / "cache"),
           "NO_COLOR": "1", "PYTHONUNBUFFERED": "1",
           BASE_URL_ENV: stand_in_hub, TOKEN_ENV: HUB_TOKEN,
           # `scratchgpt` and `python` are this interpreter's, as in the README's install.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for chapter in CHAPTERS:
        servers: list[subprocess.Popen[bytes]] = []
        try:
            for command in guide_commands(chapter):
                if command.endswith("&"):
                    servers.append(subprocess.Popen(
                        ["bash", "-c", "exec " + command[:-1].strip()], cwd=work, env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        start_new_session=True))
                    continue
                done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=work,
                                      env=env, capture_output=True, text=True,
                                      timeout=COMMAND_TIMEOUT_S)
                assert done.returncode == 0, (
                    f"{chapter.name}: `{command}` exited {done.returncode}\n"
                    f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}")
            for server in servers:  # a server that failed to start would go unnoticed
                assert server.poll() is None, f"{chapter.name}: a server exited early"
        finally:
            for server in servers:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)


def test_commands_are_split_as_bash_would(tmp_path: Path) -> None:
    chapter = tmp_path / "01-x.md"
    chapter.write_text("text\n```bash\n# a comment\nscratchgpt info \\\n  --preset micro\n\n"
                       "echo 'a b'\n```\n```text\nscratchgpt download gpt2\n```\n",
                       encoding="utf-8")
    assert guide_commands(chapter) == ["scratchgpt info    --preset micro", "echo 'a b'"]
    assert shlex.split(guide_commands(chapter)[1]) == ["echo", "a b"]
