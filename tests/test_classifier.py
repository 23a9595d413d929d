"""GPTClassifier: pooling that ignores padding, pretrained weights by name, and the choice of
weights to train (scratchgpt.model.classifier and scratchgpt.model.trainable); and a run's
Classifier, which refuses empty texts (scratchgpt.classify, `scratchgpt classify`)."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scratchgpt.classify import Classifier
from scratchgpt.cli import main
from scratchgpt.config import get_preset
from scratchgpt.model import GPTClassifier, GPTModel, set_trainable

NANO = get_preset("nano").replace(vocab_size=97)  # emb_dim 64, 2 layers, context 64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def padded(texts: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``texts`` to the longest: ``(input_ids [B, T], lengths [B])``."""
    width = max(len(text) for text in texts)
    ids = torch.full((len(texts), width), pad_id)
    for row, text in enumerate(texts):
        ids[row, : len(text)] = text
    return ids, torch.tensor([len(text) for text in texts])


# -- pooling -----------------------------------------------------------------------------
@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_prediction_does_not_depend_on_padding(pooling: str, pos_encoding: str) -> None:
    model = GPTClassifier(NANO.replace(pos_encoding=pos_encoding), 3, pooling).eval()
    short = torch.randint(0, NANO.vocab_size, (5,))
    long = torch.randint(0, NANO.vocab_size, (13,))
    alone = model(short[None], torch.tensor([5]))[0]
    for pad_id in (0, NANO.vocab_size - 1, int(short[-1])):
        for texts, row in (([short, long], 0), ([long, short], 1)):
            ids, lengths = padded(texts, pad_id)
            in_batch = model(ids, lengths)[row]
            torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=0)


def test_reading_position_minus_one_would_depend_on_padding() -> None:
    # The book's code: logits of the last position of the padded batch. For the short text
    # that is a padding token, so its prediction changes with the padding: the test above
    # would catch that bug.
    model = GPTClassifier(NANO, 3).eval()
    short = torch.randint(0, NANO.vocab_size, (5,))
    long = torch.randint(0, NANO.vocab_size, (13,))
    alone = model(short[None], torch.tensor([5]))[0]
    ids, _ = padded([short, long], pad_id=0)
    book = model.head(model.backbone.hidden_states(ids)[:, -1])[0]
    assert (book - alone).abs().max() > 1e-2


def test_mean_pooling_averages_the_real_tokens_only() -> None:
    model = GPTClassifier(NANO, 2, pooling="mean").eval()
    texts = [torch.randint(0, NANO.vocab_size, (n,)) for n in (3, 9, 1)]
    ids, lengths = padded(texts, pad_id=7)
    hidden = model.backbone.hidden_states(ids)
    expected = torch.stack([model.head(hidden[row, :n].mean(dim=0))
                            for row, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(model(ids, lengths), expected, atol=1e-6, rtol=0)


def test_last_pooling_reads_each_texts_last_real_token() -> None:
    model = GPTClassifier(NANO, 2).eval()
    ids, lengths = padded([torch.randint(0, NANO.vocab_size, (n,)) for n in (4, 8)], pad_id=0)
    hidden = model.backbone.hidden_states(ids)
    expected = model.head(torch.stack([hidden[0, 3], hidden[1, 7]]))
    torch.testing.assert_close(model(ids, lengths), expected, atol=1e-6, rtol=0)


def test_the_language_model_head_is_never_run() -> None:
    model = GPTClassifier(NANO, 2)
    calls = []
    model.backbone.out_head.register_forward_hook(lambda *_: calls.append(1))
    logits = model(torch.randint(0, NANO.vocab_size, (2, 6)), torch.tensor([6, 2]))
    assert logits.shape == (2, 2) and calls == []


@pytest.mark.parametrize(
    ("lengths", "match"),
    [
        (torch.tensor([0, 4]), r"in 1\.\.6"),
        (torch.tensor([7, 4]), r"in 1\.\.6"),
        (torch.tensor([4]), r"shape \(2,\)"),
        (torch.tensor([4.0, 2.0]), "integers"),
    ],
)
def test_bad_lengths_are_refused(lengths: torch.Tensor, match: str) -> None:
    model = GPTClassifier(NANO, 2)
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(2, 6, dtype=torch.long), lengths)


def test_bad_shapes_and_settings_are_refused() -> None:
    model = GPTClassifier(NANO, 2)
    with pytest.raises(ValueError, match=r"\[batch, tokens\]"):
        model(torch.zeros(6, dtype=torch.long), torch.tensor([6]))
    with pytest.raises(ValueError, match="choose one of: last, mean"):
        GPTClassifier(NANO, 2, pooling="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2"):
        GPTClassifier(NANO, 1)
    with pytest.raises(ValueError, match="differs"):
        GPTClassifier(NANO, 2, backbone=GPTModel(NANO.replace(n_layers=1)))


# -- weights by name ---------------------------------------------------------------------
def test_a_language_models_weights_load_into_the_backbone_by_name() -> None:
    gpt = GPTModel(NANO).eval()
    model = GPTClassifier(NANO, 2).eval()  # different random weights
    ids = torch.randint(0, NANO.vocab_size, (2, 10))
    assert not torch.allclose(model.backbone.hidden_states(ids), gpt.hidden_states(ids))
    model.backbone.load_state_dict(gpt.state_dict())  # strict: every name matches
    torch.testing.assert_close(model.backbone.hidden_states(ids), gpt.hidden_states(ids),
                               atol=0, rtol=0)


def test_state_dict_keys_are_the_backbones_plus_the_head() -> None:
    gpt_keys = list(GPTModel(NANO).state_dict())
    model = GPTClassifier(NANO, 4)
    assert list(model.state_dict()) == [f"backbone.{key}" for key in gpt_keys] + [
        "head.weight", "head.bias"]
    assert model.head.weight.shape == (4, NANO.emb_dim)


def test_from_language_model_builds_on_the_model_itself() -> None:
    gpt = GPTModel(NANO)
    model = GPTClassifier.from_language_model(gpt, 2, pooling="mean")
    assert model.backbone is gpt and model.pooling == "mean" and model.num_classes == 2


# -- which weights train -----------------------------------------------------------------
E, V, C = NANO.emb_dim, NANO.vocab_size, 2
ATTENTION = (E * 3 * E + 3 * E) + (E * E + E)  # qkv, out_proj
FEED_FORWARD = (E * 4 * E + 4 * E) + (4 * E * E + E)  # fc, out_proj
BLOCK = 2 * E + ATTENTION + 2 * E + FEED_FORWARD  # with norm1 and norm2
FINAL_NORM, HEAD = 2 * E, E * C + C
TOTAL = V * E + NANO.context_length * E + NANO.n_layers * BLOCK + FINAL_NORM + HEAD  # tied


@pytest.mark.parametrize(
    ("choice", "trainable"),
    [
        ("head", HEAD),
        ("last-block", BLOCK + FINAL_NORM + HEAD),
        ("last-blocks:1", BLOCK + FINAL_NORM + HEAD),
        ("last-blocks:2", 2 * BLOCK + FINAL_NORM + HEAD),
        ("all", TOTAL),
    ],
)
def test_trainable_parameter_counts_match_hand_counts(choice: str, trainable: int) -> None:
    model = GPTClassifier(NANO, C)
    summary = set_trainable(model, choice)
    assert (summary.trainable, summary.total) == (trainable, TOTAL)
    assert GPTModel(NANO).num_parameters() + HEAD == TOTAL
    assert str(summary).startswith(f"training {choice}: {trainable:,} of {TOTAL:,} parameters")


def test_last_block_means_the_last_block_final_norm_and_head() -> None:
    model = GPTClassifier(NANO, C)
    set_trainable(model, "last-block")
    trainable = {name.split(".")[2] if name.startswith("backbone.blocks") else name
                 for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"1", "backbone.final_norm.scale", "backbone.final_norm.shift",
                         "head.weight", "head.bias"}


def test_an_untied_output_layer_is_not_trained() -> None:
    config = NANO.replace(tie_weights=False)
    summary = set_trainable(GPTClassifier(config, C), "all")
    assert summary.total == TOTAL + V * E and summary.trainable == TOTAL


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("choice", ["head", "last-block", "last-blocks:2", "all"])
def test_gradients_reach_exactly_the_trainable_weights(choice: str, tie_weights: bool) -> None:
    model = GPTClassifier(NANO.replace(tie_weights=tie_weights), C)
    set_trainable(model, choice)
    ids, lengths = padded([torch.randint(0, V, (n,)) for n in (3, 8)], pad_id=0)
    F.cross_entropy(model(ids, lengths), torch.tensor([0, 1])).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert all(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    ("choice", "match"),
    [
        ("heads", "choose one of: head, last-block, last-blocks:N, all, lora"),
        ("last-blocks:0", r"in 1\.\.2"),
        ("last-blocks:3", r"in 1\.\.2"),
        ("last-blocks:x", r"in 1\.\.2"),
        ("last-blocks:", r"in 1\.\.2"),
    ],
)
def test_bad_choices_are_refused_and_change_nothing(choice: str, match: str) -> None:
    model = GPTClassifier(NANO, C)
    set_trainable(model, "head")
    before = [p.requires_grad for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        set_trainable(model, choice)
    assert [p.requires_grad for p in model.parameters()] == before


@pytest.mark.parametrize("tie_weights", [True, False])
def test_a_language_models_last_block_trains_with_the_final_norm_not_the_output(
        tie_weights: bool) -> None:
    model = GPTModel(NANO.replace(tie_weights=tie_weights))
    summary = set_trainable(model, "last-block")
    assert summary.trainable == BLOCK + FINAL_NORM
    ids = torch.randint(0, V, (2, 8))
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {name for name, p in model.named_parameters() if p.requires_grad}
    assert {name.split(".")[0] for name in with_grad} == {"blocks", "final_norm"}
    with pytest.raises(ValueError, match="no classification head"):
        set_trainable(model, "head")


# -- empty texts: refused, never labelled ----------------------------------------------------
def test_predict_refuses_an_empty_text_naming_its_index(classifier_run: Path) -> None:
    classifier = Classifier.from_run(classifier_run)
    for blank in ("", " \t\n"):
        with pytest.raises(ValueError, match=r"text 1 \(counting from 0\) is empty"):
            classifier.predict(["Lunch at 1?", blank, "WIN a prize"])


@pytest.mark.parametrize("blank", ["", "   "])
def test_classify_refuses_an_empty_text_argument(
    classifier_run: Path, blank: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", "--model", str(classifier_run), "hello", blank]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("scratchgpt classify: error: TEXT argument 2 is empty: an empty text has "
                   "nothing to label; give each text some words\n")


def test_classify_skips_the_blank_lines_of_a_file_and_says_which(
    classifier_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = tmp_path / "messages.txt"
    messages.write_text("Lunch at 1?\n\n   \nWIN a prize\n", encoding="utf-8")
    assert main(["classify", "--model", str(classifier_run), "--file", str(messages)]) == 0
    out, err = capsys.readouterr()
    assert [line.split("\t")[2] for line in out.splitlines()] == ["Lunch at 1?", "WIN a prize"]
    assert f"{messages}: skipped 2 blank: line 2, line 3" in err
    messages.write_text("\n \n", encoding="utf-8")
    assert main(["classify", "--model", str(classifier_run), "--file", str(messages)]) == 2
    assert f"nothing to classify: {messages} holds no text" in capsys.readouterr().err

    box = mailbox.mbox(tmp_path / "inbox.mbox")
    for body in ("Cheap meds, buy now!", "", "Lunch at 1?"):
        message = EmailMessage()
        message.set_content(body)
        box.add(message)
    box.flush()
    assert main(["classify", "--model", str(classifier_run), "--file",
                 str(tmp_path / "inbox.mbox"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert "inbox.mbox: skipped 1 blank: message 2" in err
