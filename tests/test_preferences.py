"""Preference records (DPO's data): the book's shape and TRL's conversational ones read from
JSON lists and JSON Lines, every mistake named by file, record and field; pairs whose chosen
answer equals the rejected one dropped and counted; the seeded split saved and read back; each
pair tokenized exactly as instruction tuning tokenizes its record, only the answer learned,
cut from the prompt's left or dropped when too long; chosen rows then rejected rows in one
batch; and ``scratchgpt download preferences`` from a local server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
from file_server import FileServer, Route, file_servers
from hf_tokenizer_families import qwen_like

from scratchgpt.cli import main
from scratchgpt.data.batches import ShuffledBatches
from scratchgpt.data.chat_templates import ChatTemplate
from scratchgpt.data.instruction_batches import IGNORE_INDEX, InstructionExamples, collate
from scratchgpt.data.instructions import (
    Conversation,
    InstructionDataError,
    InstructionRecord,
    Record,
    record_segments,
)
from scratchgpt.data.preference_batches import PreferenceExamples
from scratchgpt.data.preferences import (
    PreferenceRecord,
    load_preference_splits,
    load_preferences,
    preference_json,
    save_preference_splits,
    split_preferences,
)
from scratchgpt.data.prompt_styles import PROMPT_STYLES, get_prompt_style
from scratchgpt.hub.datasets import DATASETS, dataset_path, download_dataset, find_dataset
from scratchgpt.hub.download import ContentError, DownloadError, read_manifest
from scratchgpt.tokenizers import (
    ENDOFTEXT,
    CharTokenizer,
    Tokenizer,
    load_gpt2_tokenizer,
    load_tokenizer,
)

BOOK_FILE = "instruction-data-with-preference.json"
ALPACA = get_prompt_style("alpaca")
SYSTEM = {"role": "system", "content": "Be polite."}
USER = {"role": "user", "content": "Name a colour."}
EARLIER = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def pair(context: tuple[dict[str, str], ...], chosen: str, rejected: str) -> PreferenceRecord:
    """A conversational pair: the context answered each way."""
    return PreferenceRecord(Conversation((*context, assistant(chosen))),
                            Conversation((*context, assistant(rejected))))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- Reading ------------------------------------------------------------------------------------


def test_the_books_preference_data_loads_and_its_identical_pairs_are_dropped(
        shared_assets: Path) -> None:
    loaded = load_preferences(shared_assets / "instructions" / BOOK_FILE)
    assert (len(loaded.pairs), loaded.identical) == (1094, 6)  # 1,100 records, 6 without a choice
    instruction, text = "Edit the following sentence for grammar.", "He go to the park every day."
    assert loaded.pairs[1] == PreferenceRecord(  # its 'output' is ignored
        InstructionRecord(instruction, text, "He goes to the park every day."),
        InstructionRecord(instruction, text, "He goes to the stupid park every single day."))
    assert all(chosen != rejected for chosen, rejected in (p.answers for p in loaded.pairs))


CONVERSATIONAL = [  # (a record as written, the pair it is)
    ({"instruction": "Add.", "input": "2, 3", "output": "5", "chosen": "5.", "rejected": "Five"},
     PreferenceRecord(InstructionRecord("Add.", "2, 3", "5."),
                      InstructionRecord("Add.", "2, 3", "Five"))),
    ({"instruction": "Add.", "chosen": [assistant("5.")], "rejected": "Five", "id": 3},
     PreferenceRecord(InstructionRecord("Add.", "", "5."), InstructionRecord("Add.", "", "Five"))),
    ({"prompt": "Name a colour.", "chosen": "Red.", "rejected": "No."},
     pair((USER,), "Red.", "No.")),
    ({"prompt": [SYSTEM, *EARLIER, USER], "chosen": [assistant("Red.")],
      "rejected": [assistant("No.")]},
     pair((SYSTEM, *EARLIER, USER), "Red.", "No.")),
    ({"messages": [USER], "chosen": "Red.", "rejected": [assistant("No.")]},
     pair((USER,), "Red.", "No.")),
    ({"chosen": [SYSTEM, USER, assistant("Red.")], "rejected": [SYSTEM, USER, assistant("No.")]},
     pair((SYSTEM, USER), "Red.", "No.")),  # TRL's implicit prompt: what both share
]


def test_the_books_shape_and_the_conversational_shapes_in_a_json_list(tmp_path: Path) -> None:
    data = [record for record, _ in CONVERSATIONAL]
    loaded = load_preferences(write(tmp_path / "pairs.json", "\n " + json.dumps(data)))
    assert loaded.pairs == [expected for _, expected in CONVERSATIONAL]
    assert loaded.identical == 0


def test_json_lines_count_the_identical_pairs_they_drop(tmp_path: Path) -> None:
    lines = [json.dumps({"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Red."}), "",
             json.dumps(CONVERSATIONAL[2][0]),
             json.dumps({"prompt": [USER], "chosen": [assistant("Red.")], "rejected": "Red."})]
    loaded = load_preferences(write(tmp_path / "pairs.jsonl", "\n".join(lines) + "\n"))
    assert loaded.pairs == [CONVERSATIONAL[2][1]]
    assert loaded.identical == 2
    only_identical = write(tmp_path / "same.jsonl", lines[0] + "\n")
    with pytest.raises(InstructionDataError, match=f"{re.escape(str(only_identical))}: in all 1 "
                       "records 'chosen' equals 'rejected': there is no preference to learn"):
        load_preferences(only_identical)


PREFERENCE_ERRORS = [
    # (record, the field named, what the message says)
    ("hi", "", "a string where a record is expected: an object with a 'chosen' and a 'rejected'"),
    ({"prompt": "x", "rejected": "y"}, "'chosen'", r"no field 'chosen' \(found fields: 'prompt'"),
    ({"instruction": "x", "chosen": "y"}, "'rejected'", "no field 'rejected'"),
    ({"output": "x", "chosen": "y", "rejected": "z"}, "'instruction', 'prompt' or 'messages'",
     r"no field .* for the context \(found fields: 'output', 'chosen', 'rejected'\)"),
    ({"chosen": [assistant("y")], "rejected": [assistant("z")]}, "'prompt'", "for the context"),
    ({"prompt": "x", "messages": [USER], "chosen": "y", "rejected": "z"}, "'prompt' and "
     "'messages'", "both give the context; a record has one of 'instruction', 'prompt', "),
    ({"instruction": 1, "chosen": "y", "rejected": "z"}, "'instruction'", "is a number, not a"),
    ({"instruction": "x", "input": None, "chosen": "y", "rejected": "z"}, "'input'",
     'is null.*"" for no input'),
    ({"instruction": " ", "chosen": "y", "rejected": "z"}, "'instruction'", "is empty; fill"),
    ({"instruction": "x", "chosen": 3, "rejected": "z"}, "'chosen'",
     "is a number, not a string or a list holding the assistant's message"),
    ({"prompt": "x", "chosen": "y", "rejected": "\n"}, "'rejected'", "is empty; fill it in"),
    ({"prompt": "x", "chosen": [], "rejected": "z"}, "'chosen'", "holds 0 messages; an answer"),
    ({"prompt": "x", "chosen": [assistant("a"), assistant("b")], "rejected": "z"}, "'chosen'",
     r"holds 2 messages.*the turns before it are the context"),
    ({"prompt": "x", "chosen": "y", "rejected": ["z"]}, "'rejected'",
     "message 0 is a string, not an object with a 'role' and a 'content'"),
    ({"prompt": "x", "chosen": "y", "rejected": [USER]}, "'rejected'",
     "message 0 has role 'user'; an answer is the assistant's message"),
    ({"prompt": "x", "chosen": [{"role": "assistant"}], "rejected": "z"}, "'chosen'",
     "message 0: field 'content' is null, not a string"),
    ({"prompt": 7, "chosen": "y", "rejected": "z"}, "'prompt'",
     "is a number, not a string .* or a list of"),
    ({"prompt": "", "chosen": "y", "rejected": "z"}, "'prompt'", "is empty"),
    ({"prompt": [USER, assistant("y")], "chosen": "y", "rejected": "z"}, "'prompt'",
     "message 1 has role 'assistant': the context must end with the user's message"),
    ({"prompt": [SYSTEM], "chosen": "y", "rejected": "z"}, "'prompt'", "message 0 has role "
     "'system': the context must end"),
    ({"messages": "x", "chosen": "y", "rejected": "z"}, "'messages'", "is a string, not a list"),
    ({"messages": [USER, USER], "chosen": "y", "rejected": "z"}, "'messages'",
     "message 1 has role 'user' where 'assistant' is expected"),
    ({"messages": [{**USER, "content": " "}], "chosen": "y", "rejected": "z"}, "'messages'",
     r"message 0 \(user\) has an empty 'content'"),
    ({"chosen": [USER, assistant("y")], "rejected": [{**USER, "content": "Other."},
                                                     assistant("z")]},
     "'chosen' and 'rejected'", "must be the same but for their last message"),
    ({"chosen": [USER, assistant("y")], "rejected": [USER, assistant("z"), USER]}, "'rejected'",
     "must end with an assistant message"),
]
GOOD = {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "No."}


@pytest.mark.parametrize(("record", "field", "error"), PREFERENCE_ERRORS)
def test_a_bad_record_in_a_json_list_is_named_by_file_record_and_field(
    tmp_path: Path, record: object, field: str, error: str
) -> None:
    path = write(tmp_path / "pairs.json", json.dumps([GOOD, record], indent=2))
    with pytest.raises(InstructionDataError, match=error) as caught:
        load_preferences(path)
    assert str(caught.value).startswith(f"{path}: record 1: ")
    assert field in str(caught.value)


@pytest.mark.parametrize(("record", "field", "error"), PREFERENCE_ERRORS[:6])
def test_a_bad_record_in_json_lines_is_named_by_file_line_and_field(
    tmp_path: Path, record: object, field: str, error: str
) -> None:
    path = write(tmp_path / "pairs.jsonl", "\n".join([json.dumps(GOOD), "", json.dumps(record)]))
    with pytest.raises(InstructionDataError, match=error) as caught:
        load_preferences(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert field in str(caught.value)


def test_a_file_that_is_not_preference_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(InstructionDataError, match="holds no preference records; expected a "
                       "JSON list of records or one record per line, each an object with a "
                       "'chosen'"):
        load_preferences(write(tmp_path / "empty.json", "[]"))
    with pytest.raises(InstructionDataError, match=r"broken.json:2: not valid JSON"):
        load_preferences(write(tmp_path / "broken.json", '[\n  {"prompt" "x"}]'))
    with pytest.raises(FileNotFoundError, match="preference data not found: .*nothing.json"):
        load_preferences(tmp_path / "nothing.json")
    with pytest.raises(IsADirectoryError, match="preference data is one file.*pairs.json"):
        load_preferences(write(tmp_path / "pairs.json", "[]").parent)


def test_chosen_and_rejected_answer_one_context() -> None:
    with pytest.raises(ValueError, match="answer different contexts"):
        PreferenceRecord(InstructionRecord("Add.", "", "5"), InstructionRecord("Sub.", "", "1"))
    with pytest.raises(ValueError, match="answer different contexts"):
        PreferenceRecord(InstructionRecord("Name a colour.", "", "Red."),
                         Conversation((USER, assistant("No."))))


# --- Splitting ----------------------------------------------------------------------------------


def test_the_seeded_split_is_saved_and_read_back_in_both_shapes(tmp_path: Path) -> None:
    pairs = [expected for _, expected in CONVERSATIONAL] * 3
    splits = split_preferences(pairs, seed=5, fractions=(0.6, 0.2, 0.2))
    assert splits.counts() == {"train": 10, "val": 4, "test": 4}
    assert split_preferences(pairs, seed=5, fractions=(0.6, 0.2, 0.2)) == splits
    save_preference_splits(splits, tmp_path / "split")
    assert load_preference_splits(tmp_path / "split") == splits
    assert json.loads((tmp_path / "split" / "split.json").read_text())["seed"] == 5
    assert [preference_json(p) for p in pairs[:3]] == [
        {"instruction": "Add.", "input": "2, 3", "chosen": "5.", "rejected": "Five"},
        {"instruction": "Add.", "input": "", "chosen": "5.", "rejected": "Five"},
        {"prompt": [USER], "chosen": [assistant("Red.")], "rejected": [assistant("No.")]}]
    with pytest.raises(ValueError, match="2 preference records are too few to split"):
        split_preferences(pairs[:2], seed=0)


# --- Tokens -------------------------------------------------------------------------------------


def learned(tokenizer: Tokenizer, targets: torch.Tensor) -> str:
    """The text of the targets that count in the loss."""
    return tokenizer.decode(targets[targets != IGNORE_INDEX].tolist())


@pytest.fixture(scope="module")
def gpt2(shared_assets: Path) -> Tokenizer:
    return load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer")


@pytest.fixture(scope="module")
def book_pairs(shared_assets: Path) -> list[PreferenceRecord]:
    return load_preferences(shared_assets / "instructions" / BOOK_FILE).pairs[:40]


@pytest.mark.parametrize("name", sorted(PROMPT_STYLES))
def test_each_answer_is_the_instruction_example_of_its_record_with_the_prompt_masked(
        name: str, gpt2: Tokenizer, book_pairs: list[PreferenceRecord]) -> None:
    """The chosen text of a pair is what ``finetune instruct --mask-prompt`` trains on for the
    record with the chosen answer as its output, token for token; the same for the rejected."""
    style = PROMPT_STYLES[name]
    examples = PreferenceExamples(book_pairs, gpt2, style, context_length=1024)
    for side in ("chosen", "rejected"):
        records = [getattr(p, side) for p in book_pairs]
        instruct = InstructionExamples(records, gpt2, style, 1024, mask_prompt=True)
        assert getattr(examples, f"{side}_ids") == instruct.ids
        assert getattr(examples, f"{side}_trained") == instruct.trained
    _, targets = examples.batch(range(4))
    for row, p in enumerate(book_pairs[:4]):
        assert learned(gpt2, targets[row]) == p.answers[0] + style.end_of_turn + ENDOFTEXT
        assert learned(gpt2, targets[4 + row]) == p.answers[1] + style.end_of_turn + ENDOFTEXT
    assert (examples.truncated, examples.dropped, examples.fitting_report()) == (0, 0, "")


def test_in_a_chat_template_only_the_final_answer_and_its_end_of_turn_are_learned(
        tmp_path: Path) -> None:
    """A template adds no end-of-text: each answer ends as it closes the turn. A conversation's
    earlier answer is context here, where instruction tuning learns it too."""
    tokenizer = load_tokenizer(qwen_like(tmp_path / "tokenizer.json"))
    template = ChatTemplate(get_prompt_style("chatml").chat_template)
    pairs = [pair((SYSTEM, *EARLIER, USER), "Red.", "No."),
             PreferenceRecord(InstructionRecord("Add.", "2, 3", "5."),
                              InstructionRecord("Add.", "2, 3", "Five"))]
    examples = PreferenceExamples(pairs, tokenizer, template, context_length=128)
    _, targets = examples.batch([0, 1])
    assert [learned(tokenizer, row) for row in targets] == [
        "Red.<|im_end|>\n", "5.<|im_end|>\n", "No.<|im_end|>\n", "Five<|im_end|>\n"]
    instruct = InstructionExamples([pairs[0].chosen], tokenizer, template, 128, mask_prompt=True)
    assert examples.chosen_ids[0] == instruct.ids[0]  # the same tokens, fewer of them learned
    assert learned(tokenizer, instruct.batch([0])[1][0]) == "Hello.<|im_end|>\nRed.<|im_end|>\n"
    assert tokenizer.decode(examples.chosen_ids[0]).startswith("<|im_start|>system\nBe polite.")


def char_tokenizer(pairs: list[PreferenceRecord]) -> CharTokenizer:
    texts = [segment.text for p in pairs for record in (p.chosen, p.rejected)
             for segment in record_segments(record, ALPACA)]
    return CharTokenizer.from_texts(texts, special_tokens=[ENDOFTEXT])


def full_text(record: Record) -> str:
    """The record's text in alpaca: one token a character, then the end-of-text token."""
    return "".join(segment.text for segment in record_segments(record, ALPACA))


def test_a_long_pair_loses_its_prompts_left_on_both_sides_and_keeps_both_answers() -> None:
    long = PreferenceRecord(InstructionRecord("Repeat: " + "la " * 40, "", "Done."),
                            InstructionRecord("Repeat: " + "la " * 40, "", "No, I will not."))
    tokenizer = char_tokenizer([long])
    examples = PreferenceExamples([long], tokenizer, ALPACA, context_length=50)
    assert (len(examples), examples.truncated, examples.dropped) == (1, 1, 0)
    chosen, rejected = (tokenizer.decode(ids) for ids in (examples.chosen_ids[0],
                                                          examples.rejected_ids[0]))
    cut = len(full_text(long.rejected)) + 1 - 51  # the longer side fills the context, plus one
    assert examples.rejected_ids[0][-1] == tokenizer.eot_id and len(examples.rejected_ids[0]) == 51
    assert rejected == full_text(long.rejected)[cut:] + ENDOFTEXT
    assert chosen == full_text(long.chosen)[cut:] + ENDOFTEXT  # both read the same prompt
    inputs, targets = examples.batch([0])
    assert inputs.shape == (2, 50)
    assert [learned(tokenizer, row) for row in targets] == ["Done." + ENDOFTEXT,
                                                            "No, I will not." + ENDOFTEXT]
    assert examples.fitting_report() == ("1 pair longer than the context of 50 tokens cut from "
                                         "the prompt's left to fit")


def test_a_pair_whose_longer_answer_does_not_fit_is_dropped_and_counted() -> None:
    short = PreferenceRecord(InstructionRecord("Add.", "", "5"), InstructionRecord("Add.", "", "6"))
    rambling = "Well, let me think about it for a while, then " * 5
    long = PreferenceRecord(InstructionRecord("Add.", "", "5"),
                            InstructionRecord("Add.", "", rambling))
    tokenizer = char_tokenizer([short, long])
    examples = PreferenceExamples([long, short, short], tokenizer, ALPACA, context_length=200)
    assert (len(examples), examples.dropped, examples.truncated) == (2, 1, 0)
    assert examples.fitting_report() == ("1 pair left out: even with the prompt cut, the longer "
                                         "answer and its end need more than 200 tokens")
    needed = len(rambling) + 1  # the answer and end-of-text, all of them targets
    with pytest.raises(ValueError, match=f"all 1 preference pairs are dropped.*context of "
                       f"{needed - 1} .*needs a context of {needed}"):
        PreferenceExamples([long], tokenizer, ALPACA, context_length=needed - 1)
    kept = PreferenceExamples([long], tokenizer, ALPACA, context_length=needed)
    assert (kept.truncated, kept.dropped) == (1, 0)
    assert learned(tokenizer, kept.batch([0])[1][1]) == rambling + ENDOFTEXT


def test_a_batch_is_the_chosen_rows_then_the_rejected_rows_padded_to_the_longest() -> None:
    pairs = [PreferenceRecord(InstructionRecord("Add.", "", "5"),
                              InstructionRecord("Add.", "", "Five, I think.")),
             PreferenceRecord(InstructionRecord("Name a colour, please.", "", "Red."),
                              InstructionRecord("Name a colour, please.", "", "No."))]
    tokenizer = char_tokenizer(pairs)
    examples = PreferenceExamples(pairs, tokenizer, ALPACA, context_length=1024)
    inputs, targets = examples.batch(torch.tensor([1, 0]))
    rows = [pairs[1].chosen, pairs[0].chosen, pairs[1].rejected, pairs[0].rejected]
    texts = [full_text(record) for record in rows]
    assert inputs.shape == targets.shape == (4, max(len(text) for text in texts))
    for row, text in enumerate(texts):  # each row's text and end-of-text but the last token
        assert tokenizer.decode(inputs[row, : len(text)].tolist()) == text
        assert (inputs[row, len(text):] == tokenizer.eot_id).all()  # padding
    assert [learned(tokenizer, row) for row in targets] == [
        "Red." + ENDOFTEXT, "5" + ENDOFTEXT, "No." + ENDOFTEXT, "Five, I think." + ENDOFTEXT]
    ids = [examples.chosen_ids[1], examples.chosen_ids[0], examples.rejected_ids[1],
           examples.rejected_ids[0]]
    trained = [examples.chosen_trained[1], examples.chosen_trained[0],
               examples.rejected_trained[1], examples.rejected_trained[0]]
    expected = collate(ids, trained, tokenizer.eot_id)
    assert torch.equal(inputs, expected[0]) and torch.equal(targets, expected[1])

    shuffled_inputs, _ = next(ShuffledBatches(examples, batch_size=2, seed=0))
    assert shuffled_inputs.shape[0] == 4  # two pairs, four rows
    with pytest.raises(ValueError, match="only 2 training preference pairs.*more preference "
                       "records"):
        ShuffledBatches(examples, batch_size=4)


def test_a_tokenizer_without_end_of_text_is_refused_in_a_prompt_style() -> None:
    pairs = [CONVERSATIONAL[0][1]]
    tokenizer = CharTokenizer.from_texts([full_text(pairs[0].chosen), full_text(pairs[0].rejected)])
    with pytest.raises(ValueError, match="no end-of-text token.*mark where an answer ends"):
        PreferenceExamples(pairs, tokenizer, ALPACA, 1024)


# --- Download -----------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCHGPT_BASE_URL", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def serve_book(shared_assets: Path) -> Iterator[Callable[..., FileServer]]:
    """``serve_book(data)`` serves ``data`` (the book's file) at the path of its GitHub URL."""
    path = urlsplit(DATASETS["preferences"].urls[BOOK_FILE]).path
    book = (shared_assets / "instructions" / BOOK_FILE).read_bytes()
    with file_servers() as start:
        yield lambda data=book: start({path: Route(data)})


def test_download_preferences_fetches_verifies_and_finds_the_books_file(
    serve_book, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert DATASETS["preferences"].urls == {BOOK_FILE: (
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/"
        "04_preference-tuning-with-dpo/instruction-data-with-preference.json")}
    server = serve_book()
    assert main(["download", "preferences", "--base-url", server.url]) == 0
    directory = cache / "datasets" / "preferences"
    assert capsys.readouterr().out == f"{directory}\n"
    assert [path for path, _ in server.requests] == [
        "/rasbt/LLMs-from-scratch/main/ch07/04_preference-tuning-with-dpo/" + BOOK_FILE]
    assert read_manifest(directory)[BOOK_FILE]["verified"] == ["size", "sha256", "content"]
    assert find_dataset("preferences") == directory / BOOK_FILE
    assert dataset_path("preferences", "preferences") == directory / BOOK_FILE  # --data name
    assert len(load_preferences(dataset_path("preferences", "preferences")).pairs) == 1094


def test_a_file_that_is_not_the_books_preference_data_is_refused(
    serve_book, cache: Path, tmp_path: Path
) -> None:
    other = json.dumps([GOOD]).encode()
    with pytest.raises(DownloadError, match=rf"{BOOK_FILE} from \S+ failed verification: .*"
                       r"sha256"):
        download_dataset("preferences", base_url=serve_book(other).url, progress=False)
    assert not (cache / "datasets" / "preferences").exists()
    check = DATASETS["preferences"].checks[BOOK_FILE]  # what any file is read through
    with pytest.raises(ContentError, match=r"expected preference records, found: .*record 0: no "
                       "field 'rejected'"):
        check(write(tmp_path / BOOK_FILE, json.dumps([{"instruction": "x", "chosen": "y"}])))
