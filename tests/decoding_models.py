"""Small models for decoding tests: a random one, and one whose weights spell out a known
text token by token, with a byte-level tokenizer to read it."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from scratchgpt.config import ModelConfig
from scratchgpt.model import GPTModel

TINY = ModelConfig(vocab_size=101, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
PROMPT = [5, 17, 42, 8, 99]


def random_model(pos_encoding: str = "learned", **changes: object) -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(TINY.replace(pos_encoding=pos_encoding, **changes)).eval()


# -- a model and tokenizer that spell out a known text -------------------------------------
TEXT = "Héllo, wörld! 世界 ok"
TEXT_BYTES = TEXT.encode()  # 25 bytes: é and ö take 2, 世 and 界 take 3


class ByteTokenizer:
    """Token ``i`` is the ``i``-th byte of TEXT; the id after the last is <|endoftext|>."""

    eot_id = len(TEXT_BYTES)

    def encode(self, text: str) -> list[int]:
        assert TEXT_BYTES.startswith(text.encode())
        return list(range(len(text.encode())))

    def post_process(self, ids: list[int]) -> list[int]:
        return ids  # no BOS, as GPT-2

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(TEXT_BYTES[i : i + 1] for i in ids)


def script_model() -> GPTModel:
    """A real GPTModel whose weights make token ``i`` always followed by ``i + 1``.

    Blocks write nothing into the residual stream (zero output projections), positions are
    zero, token ``i`` embeds as a spike in dimension ``i``, and the output layer's row
    ``i + 1`` reads dimension ``i``: the argmax of the logits is ``i + 1`` (eot -> 0).
    """
    vocab = len(TEXT_BYTES) + 1
    config = ModelConfig(vocab_size=vocab, context_length=8, emb_dim=32, n_heads=2,
                         n_layers=1, tie_weights=False)
    model = GPTModel(config).eval()
    with torch.no_grad():
        model.tok_emb.weight.zero_()
        model.tok_emb.weight[:, :vocab] = 10 * torch.eye(vocab)
        model.pos_emb.weight.zero_()
        for proj in (model.blocks[0].att.out_proj, model.blocks[0].ff.out_proj):
            proj.weight.zero_()
            proj.bias.zero_()
        model.out_head.weight.zero_()
        model.out_head.weight[:, :vocab] = torch.eye(vocab).roll(-1, dims=1)
    return model
