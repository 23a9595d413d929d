"""``scratchgpt chat`` through a real pseudo-terminal (pexpect), and through a pipe.

The model is the tiny instruction-tuned run of ``conftest.instruct_run``: what it says is
nonsense, but it is checked to be exactly what :class:`ChatSession` says for the same
conversation, so the terminal shows the model's answer, streamed, and nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pretrain_runs import run_env

from scratchgpt.chat import ChatSession, Sampling
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.generation import generate_tokens
from scratchgpt.run_dir import load_run

pexpect = pytest.importorskip("pexpect")

QUESTION = "Name a fruit."


def _answers(run_dir: Path, texts: list[str], max_new_tokens: int = 8,
             system: str | None = None) -> list[str]:
    """What the library answers to ``texts``, one after the other in one conversation."""
    model, tokenizer = load_run(run_dir)
    session = ChatSession(model, tokenizer, get_prompt_style("chatml"), system=system,
                          sampling=Sampling(max_new_tokens=max_new_tokens))
    return ["".join(session.reply(text)) for text in texts]


def _spawn(run_dir: Path, cache: Path, *extra: str) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "scratchgpt.cli", "chat", "--model",
                                           str(run_dir), *extra],
                          env={**run_env(cache), "TERM": "dumb"}, encoding="utf-8",
                          timeout=60)
    child.expect("commands: /reset")
    return child


def test_the_answer_streams_into_the_terminal_and_the_commands_work(
        instruct_run: tuple[Path, str], instruct_cache: Path, tmp_path: Path) -> None:
    run_dir, _ = instruct_run
    first, second = _answers(run_dir, [QUESTION, "And a vegetable?"])
    child = _spawn(run_dir, instruct_cache, "--max-new-tokens", "8")
    child.expect_exact("you> ")
    child.sendline(QUESTION)
    child.expect_exact("assistant> ")
    child.expect_exact("you> ")
    assert child.before.replace("\r\n", "\n") == first + "\n"
    child.sendline("And a vegetable?")  # the second answer sees the first exchange
    child.expect_exact("assistant> ")
    child.expect_exact("you> ")
    assert child.before.replace("\r\n", "\n") == second + "\n"

    saved = tmp_path / "chat.json"
    child.sendline(f"/save {saved}")
    child.expect_exact(f"[saved {saved}]")
    conversation = json.loads(saved.read_text(encoding="utf-8"))
    assert conversation == {"prompt_style": "chatml", "messages": [
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": first.strip()},
        {"role": "user", "content": "And a vegetable?"},
        {"role": "assistant", "content": second.strip()}]}

    child.sendline("/system You answer in French.")
    child.expect_exact("[system prompt: You answer in French.]")
    child.sendline("/reset")
    child.expect_exact("[conversation cleared]")
    child.expect_exact("you> ")
    child.sendline(QUESTION)  # a fresh conversation, under the new system prompt
    child.expect_exact("assistant> ")
    child.expect_exact("you> ")
    expected = _answers(run_dir, [QUESTION], system="You answer in French.")[0]
    assert child.before.replace("\r\n", "\n") == expected + "\n"
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_stops_the_answer_not_the_chat(instruct_run: tuple[Path, str],
                                             instruct_cache: Path) -> None:
    run_dir, _ = instruct_run
    model, tokenizer = load_run(run_dir)
    style = get_prompt_style("chatml")
    # Precondition: greedily, this model does not end its answer within 300 tokens, so the
    # answer is still streaming when Ctrl-C comes.
    prompt = tokenizer.encode_ordinary(style.render([{"role": "user", "content": QUESTION}]))
    tokens = list(generate_tokens(model, prompt, 300, eos_id=tokenizer.eot_id))
    text = tokenizer.decode(tokens)
    if len(tokens) < 300 or any(stop in text for stop in style.stop):
        pytest.skip("this tiny model ends its answer early; Ctrl-C has nothing to stop")
    child = _spawn(run_dir, instruct_cache, "--max-new-tokens", "100000")
    child.expect_exact("you> ")
    child.sendline(QUESTION)
    child.expect_exact("assistant> ")
    child.expect(".")  # the answer has begun
    child.sendintr()
    child.expect_exact("[stopped]")
    child.expect_exact("you> ")  # the chat goes on
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_old_turns_are_dropped_to_fit_the_context_and_the_user_is_told(
        instruct_run: tuple[Path, str], instruct_cache: Path) -> None:
    run_dir, _ = instruct_run
    long_message = " ".join(["Describe the weather in the mountains in spring."] * 5)
    child = _spawn(run_dir, instruct_cache, "--max-new-tokens", "8")
    for _ in range(2):
        child.expect_exact("you> ")
        child.sendline(long_message)
    child.expect_exact("[dropped the 1 oldest exchange(s) to fit the model's context of 160")
    child.expect_exact("you> ")
    child.sendline(" ".join([long_message] * 3))  # longer than the context by itself
    child.expect(r"only its last \d+ are read")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_piped_input_prints_a_log_of_each_turn(instruct_run: tuple[Path, str],
                                              instruct_cache: Path) -> None:
    run_dir, _ = instruct_run
    # One message a line: a line separator or form feed inside a line does not end it.
    second = "And a vegetable?\u2028Or\x0ctwo?"
    done = subprocess.run(
        [sys.executable, "-m", "scratchgpt.cli", "chat", "--model", str(run_dir),
         "--max-new-tokens", "8"], input=f"{QUESTION}\r\n/reset\n{second}\n".encode(),
        env=run_env(instruct_cache), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # /reset between them: each message is answered as the first of a conversation.
    first, after_reset = _answers(run_dir, [QUESTION])[0], _answers(run_dir, [second])[0]
    assert done.stdout.decode() == (f"> {QUESTION}\n{first}\n\n"
                                    f"> {second}\n{after_reset}\n\n")
    assert "[conversation cleared]" in done.stderr.decode()  # notes on stderr


def test_a_save_that_fails_says_why_and_the_chat_goes_on(
        instruct_run: tuple[Path, str], instruct_cache: Path, tmp_path: Path) -> None:
    run_dir, _ = instruct_run
    first, second = _answers(run_dir, [QUESTION, "And a vegetable?"])
    child = _spawn(run_dir, instruct_cache, "--max-new-tokens", "8")
    child.expect_exact("you> ")
    child.sendline(QUESTION)
    child.expect_exact("you> ")
    missing = tmp_path / "no" / "such" / "chat.json"
    child.sendline(f"/save {missing}")
    child.expect_exact(f"[not saved: {missing}: the directory {missing.parent} does not "
                       "exist; create it, or save elsewhere. The conversation is kept.]")
    child.expect_exact("you> ")
    child.sendline(f"/save {tmp_path}")
    child.expect_exact(f"[not saved: {tmp_path} is a directory; give a file name, such as "
                       f"{tmp_path / 'chat.json'}. The conversation is kept.]")
    child.expect_exact("you> ")
    child.sendline("/save")
    child.expect_exact("[/save needs a file name: /save FILE]")
    child.expect_exact("you> ")
    child.sendline("And a vegetable?")  # the chat goes on, the first exchange remembered
    child.expect_exact("assistant> ")
    child.expect_exact("you> ")
    assert child.before.replace("\r\n", "\n") == second + "\n"
    saved = tmp_path / "chat.json"
    child.sendline(f"/save {saved}")
    child.expect_exact(f"[saved {saved}]")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert json.loads(saved.read_text(encoding="utf-8"))["messages"] == [
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": first.strip()},
        {"role": "user", "content": "And a vegetable?"},
        {"role": "assistant", "content": second.strip()}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json"]  # no temporary file


def test_save_replaces_the_file_whole_by_renaming(instruct_run: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    model, tokenizer = load_run(instruct_run[0])
    session = ChatSession(model, tokenizer, get_prompt_style("chatml"))
    path = tmp_path / "chat.json"
    path.write_text("the old conversation\n", encoding="utf-8")
    reader = path.open(encoding="utf-8")  # a reader of the old file, mid-save
    session.turns += [{"role": "user", "content": QUESTION},
                      {"role": "assistant", "content": "An apple."}]
    assert session.save(path) == path
    assert json.loads(path.read_text(encoding="utf-8"))["messages"] == session.turns
    assert reader.read() == "the old conversation\n"  # a new file was renamed over it
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json"]
    with pytest.raises(IsADirectoryError, match="is a directory"):
        session.save(tmp_path)


def test_a_base_model_chats_with_a_warning(instruct_base: Path, instruct_cache: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scratchgpt.cli", "chat", "--model", str(instruct_base),
         "--max-new-tokens", "4"], input=f"{QUESTION}\n",
        env=run_env(instruct_cache), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "was never instruction-tuned" in done.stderr
    assert done.stdout.startswith(f"> {QUESTION}\n") and done.stdout.endswith("\n\n")
