"""The guide (``docs/guide/``) cannot go stale: every command in its ``bash`` blocks is run here.

The chapters run in order, in one fresh working directory whose parent holds ``shared/`` (so
the guide's ``../shared/assets/...`` paths work as they do beside a clone), each command line
as the guide shows it, through ``bash``. Two things make that quick, and neither changes what
the guide shows: ``SCRATCHGPT_MAX_STEPS`` caps every training command at a few steps
(``scratchgpt.training.runner``), and the cache is private to the test. A line ending in
`` &`` starts a server in the background, stopped when its chapter ends; commands that need
the internet are kept out of ``bash`` blocks by the guide.

The walk through the guide takes minutes (some 60 commands, each starting Python and PyTorch),
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
from pathlib import Path

import pytest

from scratchgpt.training.runner import STEP_CAP_ENV, step_cap

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide"
CHAPTERS = sorted(GUIDE.glob("[0-9][0-9]-*.md"))
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
COMMAND_TIMEOUT_S = 240


def guide_commands(chapter: Path) -> list[str]:
    """The command lines of a chapter's ``bash`` blocks: continued lines joined, comments and
    blank lines left out."""
    commands = []
    for block in BASH_BLOCK.findall(chapter.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def test_the_guide_has_its_chapters_and_commands() -> None:
    assert [c.name[:3] for c in CHAPTERS] == [f"{i:02d}-" for i in range(1, 7)], CHAPTERS
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
def test_every_command_of_the_guide_runs(shared_assets: Path,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("guide")
    (root / "shared").symlink_to(shared_assets.parent)
    work = root / "work"
    work.mkdir()
    env = {**os.environ, STEP_CAP_ENV: "3", "SCRATCHGPT_CACHE": str(root / "cache"),
           "NO_COLOR": "1", "PYTHONUNBUFFERED": "1",
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
