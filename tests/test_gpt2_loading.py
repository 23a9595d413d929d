"""Loading GPT-2 from every published layout, and exporting ours, checked against transformers.

* Hugging Face directories (``model.safetensors``, ``pytorch_model.bin``): the same logits and
  the same greedy continuation as ``GPT2LMHeadModel`` on the same files.
* OpenAI's TensorFlow checkpoint: ``tests/fixtures/tiny-gpt2-tf`` was written by TensorFlow
  itself (``tools/make_tf_fixture.py``); our reader must return exactly the tensors TensorFlow
  was given (``expected.npz``), and the loaded model must match transformers holding them.
* ``export_hf`` writes what ``from_pretrained`` loads with the same logits, tied or not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from scratchgpt.cli import main
from scratchgpt.config import ModelConfig
from scratchgpt.generation import generate_text, generate_tokens
from scratchgpt.hub.export import export_hf
from scratchgpt.hub.models import load_model
from scratchgpt.hub.tf_checkpoint import CheckpointFormatError, read_tf_checkpoint
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import load_gpt2_tokenizer, save_gpt2_files, train_bpe

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-gpt2-tf"
PROMPT = "Every effort moves you"


@pytest.fixture(scope="module")
def gpt2_tokenizer(shared_assets: Path):
    return load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer")


@pytest.fixture(scope="module")
def hf_model() -> GPT2LMHeadModel:
    """A tiny random GPT-2 with the real vocabulary; weights large enough (std 0.3) that the
    next-token distribution is peaked and greedy decoding has no near-ties."""
    torch.manual_seed(0)
    config = GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=32, vocab_size=50257,
                        initializer_range=0.3)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def hf_dir(hf_model: GPT2LMHeadModel, gpt2_tokenizer, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(directory)
    save_gpt2_files(gpt2_tokenizer, directory)
    return directory


def assert_same_as_transformers(model: GPTModel, tokenizer, reference: GPT2LMHeadModel,
                                prompt: str = PROMPT, new_tokens: int = 8) -> None:
    """Same logits (max abs diff < 1e-4) and same greedy continuation."""
    ids = tokenizer.encode(prompt)
    with torch.no_grad():
        ours, theirs = model(torch.tensor([ids])), reference(torch.tensor([ids])).logits
    assert (ours - theirs).abs().max() < 1e-4
    expected = reference.generate(torch.tensor([ids]), max_new_tokens=new_tokens,
                                  do_sample=False, pad_token_id=0, eos_token_id=None)
    assert list(generate_tokens(model, ids, new_tokens)) == expected[0, len(ids):].tolist()


# -- Hugging Face layout ------------------------------------------------------------------------
def test_hf_safetensors_directory(hf_dir: Path, hf_model: GPT2LMHeadModel) -> None:
    model, tokenizer = load_model(hf_dir)
    assert model.config.emb_dim == 16 and model.config.tie_weights and not model.training
    assert model.out_head.weight is model.tok_emb.weight
    assert_same_as_transformers(model, tokenizer, hf_model)


def test_hf_pytorch_model_bin(hf_dir: Path, hf_model: GPT2LMHeadModel, tmp_path: Path) -> None:
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(hf_dir / name, tmp_path / name)
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    model, tokenizer = load_model(tmp_path)
    assert_same_as_transformers(model, tokenizer, hf_model)


def test_hf_hub_style_names(hf_dir: Path, hf_model: GPT2LMHeadModel, tmp_path: Path) -> None:
    """The hub's own GPT-2 files name tensors without ``transformer.``, carry the causal-mask
    buffers ``h.N.attn.bias`` and leave out the tied ``lm_head.weight``."""
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(hf_dir / name, tmp_path / name)
    weights = {name.removeprefix("transformer."): tensor.clone()
               for name, tensor in hf_model.state_dict().items() if name != "lm_head.weight"}
    for layer in range(2):
        weights[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    save_file(weights, tmp_path / "model.safetensors")
    model, tokenizer = load_model(tmp_path)
    assert_same_as_transformers(model, tokenizer, hf_model)


def test_a_wrong_shape_names_the_tensor_and_file(hf_dir: Path, tmp_path: Path) -> None:
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(hf_dir / name, tmp_path / name)
    weights = load_file(hf_dir / "model.safetensors")
    weights["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(16, 32)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'h.1.mlp.c_fc.weight' has "
                                         r"shape \(16, 32\), expected \(16, 64\)"):
        load_model(tmp_path)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="expected config.json"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a directory nor a downloaded model"):
        load_model(tmp_path / "nothing-here")


PEAK_MEMORY = """
import sys
from pathlib import Path

import torch

from scratchgpt.config import ModelConfig
from scratchgpt.hub.models import load_hf_model
from scratchgpt.model import GPTModel

def rss(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))

with torch.device("meta"):  # one-off imports that building on the meta device triggers
    GPTModel(ModelConfig(vocab_size=8, context_length=4, emb_dim=8, n_heads=1, n_layers=1))
Path("/proc/self/clear_refs").write_text("5")  # peak (VmHWM) := resident now (VmRSS)
before = rss("VmRSS")
model = load_hf_model(sys.argv[1])
print(rss("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_loading_peaks_below_1_3x_the_weights(tmp_path: Path) -> None:
    # The promise behind loading gpt2-xl (6 GB) on a 16 GB machine, on a 180 MB model: the
    # peak is the converted weights plus about one tensor, not two copies of the model.
    config = ModelConfig(context_length=256, emb_dim=512, n_heads=8, n_layers=6)
    export_hf(GPTModel(config), None, tmp_path)
    weights = (tmp_path / "model.safetensors").stat().st_size
    done = subprocess.run([sys.executable, "-c", PEAK_MEMORY, str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    peak = int(done.stdout.split()[-1])
    assert peak < 1.3 * weights, f"peak {peak / 2**20:.0f} MiB for {weights / 2**20:.0f} MiB"


# -- OpenAI's TensorFlow checkpoint ---------------------------------------------------------------
def test_tf_reader_returns_what_tensorflow_saved() -> None:
    expected = np.load(FIXTURE / "expected.npz")
    tensors = read_tf_checkpoint(FIXTURE)
    assert sorted(tensors) == sorted(expected.files)
    for name in expected.files:
        assert tensors[name].dtype == expected[name].dtype, name
        assert tensors[name].shape == expected[name].shape, name
        assert np.array_equal(tensors[name], expected[name]), name


def test_tf_reader_detects_damage(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    index = bytearray((tmp_path / "model.ckpt.index").read_bytes())
    index[40] ^= 0xFF  # a byte inside the first data block
    (tmp_path / "model.ckpt.index").write_bytes(bytes(index))
    with pytest.raises(CheckpointFormatError, match="checksum mismatch"):
        read_tf_checkpoint(tmp_path)
    shutil.copyfile(FIXTURE / "model.ckpt.index", tmp_path / "model.ckpt.index")
    with (tmp_path / "model.ckpt.data-00000-of-00001").open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_tf_checkpoint(tmp_path)


def hf_state_from_openai(tensors: dict[str, np.ndarray], n_layer: int) -> dict[str, torch.Tensor]:
    """Hugging Face's names for OpenAI's tensors, written out independently of the loader."""
    state = {"transformer.wte.weight": tensors["model/wte"],
             "transformer.wpe.weight": tensors["model/wpe"],
             "transformer.ln_f.weight": tensors["model/ln_f/g"],
             "transformer.ln_f.bias": tensors["model/ln_f/b"]}
    for i in range(n_layer):
        for module in ("ln_1", "ln_2"):
            state[f"transformer.h.{i}.{module}.weight"] = tensors[f"model/h{i}/{module}/g"]
            state[f"transformer.h.{i}.{module}.bias"] = tensors[f"model/h{i}/{module}/b"]
        for module in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            hf = f"transformer.h.{i}.{module.replace('/', '.')}"
            state[f"{hf}.weight"] = tensors[f"model/h{i}/{module}/w"][0]
            state[f"{hf}.bias"] = tensors[f"model/h{i}/{module}/b"]
    state["lm_head.weight"] = tensors["model/wte"]
    return {name: torch.from_numpy(array) for name, array in state.items()}


def test_openai_directory(tmp_path: Path) -> None:
    """The TensorFlow fixture with a byte-level BPE vocabulary of its size (260 tokens) under
    OpenAI's file names loads into the model transformers builds from the same tensors."""
    hparams = json.loads((FIXTURE / "hparams.json").read_text())
    for name in ("checkpoint", "hparams.json", "model.ckpt.index",
                 "model.ckpt.data-00000-of-00001"):
        shutil.copyfile(FIXTURE / name, tmp_path / name)
    tokenizer = train_bpe(["the theme then these " * 20], hparams["n_vocab"])
    save_gpt2_files(tokenizer, tmp_path / "hf-names")
    (tmp_path / "hf-names" / "vocab.json").rename(tmp_path / "encoder.json")
    (tmp_path / "hf-names" / "merges.txt").rename(tmp_path / "vocab.bpe")

    model, loaded_tokenizer = load_model(tmp_path)
    assert loaded_tokenizer.vocab_size == hparams["n_vocab"] == model.config.vocab_size
    reference = GPT2LMHeadModel(GPT2Config(
        n_embd=hparams["n_embd"], n_layer=hparams["n_layer"], n_head=hparams["n_head"],
        n_positions=hparams["n_ctx"], vocab_size=hparams["n_vocab"])).eval()
    reference.load_state_dict(hf_state_from_openai(dict(np.load(FIXTURE / "expected.npz")),
                                                   hparams["n_layer"]))
    assert_same_as_transformers(model, loaded_tokenizer, reference, "the", new_tokens=5)


# -- export ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("tie_weights", [True, False])
def test_export_loads_in_transformers(gpt2_tokenizer, tmp_path: Path, tie_weights: bool) -> None:
    torch.manual_seed(1)
    config = ModelConfig(vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=2,
                         tie_weights=tie_weights)
    model = GPTModel(config).eval()
    export_hf(model, gpt2_tokenizer, tmp_path)
    exported = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = torch.tensor([gpt2_tokenizer.encode(PROMPT)])
    with torch.no_grad():
        assert (exported(ids).logits - model(ids)).abs().max() < 1e-5
    assert GPT2Tokenizer.from_pretrained(tmp_path)(PROMPT)["input_ids"] == ids[0].tolist()
    assert exported.config.eos_token_id == gpt2_tokenizer.eot_id
    loaded, _ = load_model(tmp_path)
    assert torch.equal(loaded(ids), model(ids))
    assert (loaded.out_head.weight is loaded.tok_emb.weight) == tie_weights


@pytest.mark.parametrize(("change", "named"), [
    ({"pos_encoding": "rope"}, "learned positional embeddings"),
    ({"qk_norm": True}, "qk_norm=True"),
    ({"norms_per_block": 4}, "norms_per_block=4"),
    ({"n_kv_heads": 1}, "kv_heads=1"),
    ({"hidden_dim": 20}, "ffn_dim=20"),
    ({"scale_embeddings": True}, "scale_embeddings=True"),
])
def test_export_refuses_what_gpt2_cannot_express(tmp_path: Path, change: dict,
                                                 named: str) -> None:
    config = ModelConfig(vocab_size=300, context_length=8, emb_dim=8, n_heads=2, n_layers=1,
                         **change)
    with pytest.raises(ValueError, match=named):
        export_hf(GPTModel(config), None, tmp_path)
    assert not list(tmp_path.iterdir())


# -- command line -------------------------------------------------------------------------------
def test_cli_generate_and_export(hf_dir: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    model, tokenizer = load_model(hf_dir)
    expected = "".join(generate_text(model, tokenizer, PROMPT, max_new_tokens=6))
    capsys.readouterr()
    assert main(["generate", "--model", str(hf_dir), "--prompt", PROMPT,
                 "--max-new-tokens", "6"]) == 0
    out, err = capsys.readouterr()
    assert out == PROMPT + expected + "\n"
    assert "loaded" in err

    assert main(["export", str(hf_dir), "--format", "hf", "--out", str(tmp_path / "out")]) == 0
    exported = GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    with torch.no_grad():
        assert (exported(ids).logits - model(ids)).abs().max() < 1e-5
