"""GPTModel: size, shapes, layers against their formulas, KV cache, and parity with
Hugging Face's GPT2LMHeadModel through scratchgpt.hub.hf_weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from flop_counts import matrix_product_flops
from transformers import GPT2Config, GPT2LMHeadModel

from scratchgpt.config import ModelConfig, get_preset
from scratchgpt.hub.hf_weights import config_from_hf, hf_config_from, hf_to_scratch, scratch_to_hf
from scratchgpt.model import GELU, GPTModel, LayerNorm, SinusoidalPositionalEncoding
from scratchgpt.model.summary import training_flops_per_token

TINY = ModelConfig(vocab_size=101, context_length=16, emb_dim=32, n_heads=4, n_layers=2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# -- size --------------------------------------------------------------------------------
def test_gpt2_small_has_124m_parameters() -> None:
    with torch.device("meta"):  # shapes only, no memory, no init time
        model = GPTModel(get_preset("gpt2-small"))
    assert model.num_parameters() == 124_439_808
    assert model.num_parameters(exclude_tied=False) == 163_037_184
    assert model.size_bytes() == 124_439_808 * 4
    assert model.size_bytes(torch.bfloat16) == 124_439_808 * 2


def test_gpt2_small_training_flops_per_token() -> None:
    with torch.device("meta"):
        model = GPTModel(get_preset("gpt2-small"))
    weights = 6 * (124_439_808 - 1024 * 768)  # the position table is looked up, not multiplied
    attention = 12 * 12 * 1024 * 768
    assert training_flops_per_token(model) == weights + attention
    assert training_flops_per_token(model, seq_len=256) == weights + attention // 4


@pytest.mark.parametrize("tie_weights", [True, False])
def test_training_flops_match_pytorchs_count_of_matrix_products(tie_weights: bool) -> None:
    # PyTorch's FlopCounterMode counts every matrix product of a forward and backward pass.
    # Leave out what the formula adds on top: attention's term (fused into one SDPA kernel)
    # and 6 per vector parameter (biases and norms, counted by convention): the rest is exact.
    config = TINY.replace(tie_weights=tie_weights, n_layers=3)
    model = GPTModel(config)
    products = matrix_product_flops(model)
    attention = 12 * config.n_layers * config.context_length * config.emb_dim
    vectors = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    formula = training_flops_per_token(model) - attention - 6 * vectors
    assert products == formula * 2 * config.context_length  # tokens: 2 sequences


def test_tied_and_untied_output_layer() -> None:
    tied, untied = GPTModel(TINY), GPTModel(TINY.replace(tie_weights=False))
    assert tied.out_head.weight is tied.tok_emb.weight
    assert untied.out_head.weight is not untied.tok_emb.weight
    assert untied.num_parameters() == tied.num_parameters() + TINY.vocab_size * TINY.emb_dim


def test_only_learned_positions_have_parameters() -> None:
    counts = {pe: GPTModel(TINY.replace(pos_encoding=pe)).num_parameters()
              for pe in ("learned", "sinusoidal", "rope")}
    assert counts["learned"] - counts["sinusoidal"] == TINY.context_length * TINY.emb_dim
    assert counts["sinusoidal"] == counts["rope"]


def test_gpt2_initialisation() -> None:
    config = ModelConfig(vocab_size=512, context_length=32, emb_dim=256, n_heads=4, n_layers=8)
    model = GPTModel(config)
    residual_std = 0.02 / math.sqrt(2 * config.n_layers)
    block = model.blocks[3]
    assert block.att.out_proj.weight.std().item() == pytest.approx(residual_std, rel=0.03)
    assert block.ff.out_proj.weight.std().item() == pytest.approx(residual_std, rel=0.03)
    assert block.att.qkv.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert (block.att.qkv.bias == 0).all() and (block.norm1.scale == 1).all()


def test_pytorch_default_initialisation() -> None:
    config = ModelConfig(vocab_size=512, context_length=64, emb_dim=256, n_heads=4, n_layers=2,
                         init="pytorch")
    model = GPTModel(config)
    assert model.tok_emb.weight.std().item() == pytest.approx(1.0, rel=0.03)
    assert model.pos_emb.weight.std().item() == pytest.approx(1.0, rel=0.03)
    bound = 1 / math.sqrt(config.emb_dim)  # nn.Linear: uniform in +-1/sqrt(fan_in)
    weight = model.blocks[0].att.qkv.weight
    assert weight.abs().max().item() <= bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    with pytest.raises(ValueError, match="init: must be one of gpt2, pytorch, got 'xavier'"):
        config.replace(init="xavier")


# -- shapes and errors --------------------------------------------------------------------
@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope"])
def test_forward_shapes(pos_encoding: str) -> None:
    model = GPTModel(TINY.replace(pos_encoding=pos_encoding))
    idx = torch.randint(0, TINY.vocab_size, (3, 5))
    assert model(idx).shape == (3, 5, TINY.vocab_size)
    assert model.hidden_states(idx).shape == (3, 5, TINY.emb_dim)


def test_too_long_input_is_an_error() -> None:
    model = GPTModel(TINY)
    model(torch.zeros(1, TINY.context_length, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the model's context_length 16"):
        model(torch.zeros(1, TINY.context_length + 1, dtype=torch.long))
    cache = model.new_kv_cache(1)
    model(torch.zeros(1, 10, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="10 cached"):
        model(torch.zeros(1, 7, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="batch size 1"):
        model(torch.zeros(2, 1, dtype=torch.long), cache)


def test_dropout_only_in_training() -> None:
    model = GPTModel(TINY.replace(drop_rate=0.2))
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


def test_every_parameter_gets_a_gradient() -> None:
    model = GPTModel(TINY.replace(tie_weights=False))
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


# -- layers against their formulas -------------------------------------------------------
def test_layer_norm_is_the_formula() -> None:
    norm = LayerNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.scale.uniform_(0.5, 1.5)
        norm.shift.uniform_(-1, 1)
    x = torch.randn(4, 3, 6, dtype=torch.float64) * 3 + 2
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    formula = norm.scale * (x - mean) / torch.sqrt(var + 1e-5) + norm.shift
    torch.testing.assert_close(norm.double()(x), formula.double(), atol=1e-12, rtol=0)
    reference = torch.nn.LayerNorm(6, eps=1e-5).double()
    reference.load_state_dict({"weight": norm.scale, "bias": norm.shift})
    torch.testing.assert_close(norm(x), reference(x))


def test_gelu_is_the_tanh_formula() -> None:
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    formula = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(GELU()(x), formula, atol=1e-12, rtol=0)
    torch.testing.assert_close(GELU()(x), F.gelu(x, approximate="tanh"))


def test_sinusoidal_table_is_the_formula() -> None:
    table = SinusoidalPositionalEncoding(context_length=50, emb_dim=10)(50)
    for pos in (0, 1, 17, 49):
        for i in range(5):
            angle = pos / 10000 ** (2 * i / 10)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


# -- KV cache ------------------------------------------------------------------------------
@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope"])
def test_kv_cache_forward_equals_full_forward(pos_encoding: str) -> None:
    model = GPTModel(TINY.replace(pos_encoding=pos_encoding)).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.context_length))
    full = model(idx)
    cache = model.new_kv_cache(batch_size=2)
    chunks, start = [], 0
    for size in (5, 1, 1, 4, 1, 4):  # prefill, single steps, and chunks after a prefix
        chunks.append(model(idx[:, start : start + size], cache))
        start += size
    assert cache.length == TINY.context_length
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
def test_kv_cache_under_bfloat16_autocast(pos_encoding: str) -> None:
    """Under autocast the cache is allocated in the autocast dtype and decoding works."""
    model = GPTModel(TINY.replace(pos_encoding=pos_encoding)).eval()
    idx = torch.randint(0, TINY.vocab_size, (1, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        cache = model.new_kv_cache(1)
        assert cache.keys[0].dtype == torch.bfloat16
        full = model(idx)
        steps = torch.cat([model(idx[:, :3], cache)] + [model(idx[:, t : t + 1], cache)
                                                        for t in range(3, 6)], dim=1)
    assert steps.shape == full.shape
    torch.testing.assert_close(steps.float(), full.float(), atol=0.1, rtol=0.05)


# -- Hugging Face parity -------------------------------------------------------------------
def random_hf_model(**config) -> GPT2LMHeadModel:
    """A GPT2LMHeadModel whose every tensor (biases and LayerNorms too) is random."""
    model = GPT2LMHeadModel(GPT2Config(bos_token_id=0, eos_token_id=0, **config)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_norm_scale = ".ln_" in name and name.endswith("weight")
            param.normal_(1.0 if is_norm_scale else 0.0, 0.1 if is_norm_scale else 0.05)
    return model


@pytest.mark.parametrize(
    "shape",
    [
        dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64),
        dict(n_embd=768, n_layer=2, n_head=12, vocab_size=50257, n_positions=1024),
    ],
    ids=["small", "gpt2-small-width"],
)
def test_logits_match_hugging_face(shape: dict) -> None:
    hf = random_hf_model(**shape)
    config = config_from_hf(hf.config.to_dict())
    ours = GPTModel(config).eval()
    ours.load_state_dict(hf_to_scratch(hf.state_dict(), config))
    idx = torch.randint(0, shape["vocab_size"], (2, 40))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    assert diff < 1e-4


def test_untied_weights_round_trip_through_hugging_face() -> None:
    config = TINY.replace(tie_weights=False)
    ours = GPTModel(config).eval()
    hf = GPT2LMHeadModel(GPT2Config(**hf_config_from(config), bos_token_id=0, eos_token_id=0))
    hf.load_state_dict(scratch_to_hf(ours.state_dict(), config))
    idx = torch.randint(0, config.vocab_size, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf.eval()(idx).logits, ours(idx), atol=1e-5, rtol=0)
    back = hf_to_scratch(scratch_to_hf(ours.state_dict(), config), config)
    assert back.keys() == ours.state_dict().keys()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back[name], tensor), name


def test_hugging_face_round_trip_is_exact() -> None:
    hf = random_hf_model(n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=16)
    config = config_from_hf(hf.config.to_dict())
    back = scratch_to_hf(hf_to_scratch(hf.state_dict(), config), config)
    assert back.keys() == hf.state_dict().keys()
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back[name], tensor), name


def test_config_round_trip() -> None:
    config = ModelConfig(vocab_size=300, context_length=48, emb_dim=96, n_heads=6, n_layers=3,
                         drop_rate=0.1, layer_norm_eps=1e-6, tie_weights=False)
    assert config_from_hf(hf_config_from(config)) == config
    assert config_from_hf(GPT2Config(**hf_config_from(config)).to_dict()) == config


def test_conversion_errors_name_the_problem() -> None:
    hf_state = random_hf_model(n_embd=32, n_layer=2, n_head=4, vocab_size=50,
                               n_positions=16).state_dict()
    config = config_from_hf(hf_config_from(TINY.replace(vocab_size=50, emb_dim=32)))
    with pytest.raises(ValueError, match="h.1.mlp.c_fc.weight"):
        bad = dict(hf_state)
        bad["transformer.h.1.mlp.c_fc.weight"] = bad["transformer.h.1.mlp.c_fc.weight"].t()
        hf_to_scratch(bad, config)
    with pytest.raises(ValueError, match="wpe.weight"):
        hf_to_scratch(hf_state, config.replace(context_length=32))
    with pytest.raises(KeyError, match="h.0.ln_2.bias"):
        hf_to_scratch({k: v for k, v in hf_state.items() if "h.0.ln_2.bias" not in k}, config)
    with pytest.raises(ValueError, match="learned positional"):
        scratch_to_hf(GPTModel(TINY.replace(pos_encoding="rope")).state_dict(),
                      TINY.replace(pos_encoding="rope"))
    with pytest.raises(ValueError, match="activation_function"):
        config_from_hf({**hf_config_from(TINY), "activation_function": "relu"})
