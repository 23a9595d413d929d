"""Dev-only: write ``tests/fixtures/tiny-gpt2-tf/``, a tiny GPT-2 checkpoint saved by TensorFlow.

OpenAI published GPT-2 as a TensorFlow 1 checkpoint written by ``tf.train.Saver``. This script
builds a tiny model with the same variable names (``model/wte``, ``model/h0/attn/c_attn/w``, ...)
and saves it the same way, so ``tests/test_gpt2_loading.py`` can check that
``scratchgpt.hub.tf_checkpoint`` reads what TensorFlow itself wrote. It also writes every
tensor to ``expected.npz`` (the values the reader must return) and ``hparams.json``.

TensorFlow is not a dependency of scratchgpt; run this in a throwaway environment::

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu
    /tmp/tfenv/bin/python tools/make_tf_fixture.py
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny-gpt2-tf"
# n_vocab = 256 byte tokens + 3 merges + <|endoftext|>: the smallest byte-level BPE vocabulary
# the test can pair with it.
HPARAMS = {"n_vocab": 260, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 2}


def gpt2_variables(hp: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random float32 values under the names and shapes of OpenAI's ``model.py``."""
    d = hp["n_embd"]

    def normal(*shape: int, mean: float = 0.0) -> np.ndarray:
        return (mean + 0.2 * rng.standard_normal(shape)).astype(np.float32)

    tensors = {"model/wte": normal(hp["n_vocab"], d), "model/wpe": normal(hp["n_ctx"], d)}
    for layer in range(hp["n_layer"]):
        h = f"model/h{layer}"
        for norm in ("ln_1", "ln_2"):
            tensors[f"{h}/{norm}/g"] = normal(d, mean=1.0)
            tensors[f"{h}/{norm}/b"] = normal(d)
        # OpenAI's conv1d keeps its weight as [1, in, out]
        for name, n_in, n_out in (("attn/c_attn", d, 3 * d), ("attn/c_proj", d, d),
                                  ("mlp/c_fc", d, 4 * d), ("mlp/c_proj", 4 * d, d)):
            tensors[f"{h}/{name}/w"] = normal(1, n_in, n_out)
            tensors[f"{h}/{name}/b"] = normal(n_out)
    tensors["model/ln_f/g"] = normal(d, mean=1.0)
    tensors["model/ln_f/b"] = normal(d)
    return tensors


def save_with_saver(tensors: dict[str, np.ndarray], prefix: Path) -> None:
    """One variable per tensor, in nested variable scopes as OpenAI's code made them, saved by
    ``tf.compat.v1.train.Saver``: ``checkpoint``, ``model.ckpt.index`` and
    ``model.ckpt.data-00000-of-00001``. OpenAI also published the graph (``model.ckpt.meta``);
    reading weights does not need it, so it is left out to keep the fixture small."""
    graph = tf.Graph()
    with graph.as_default():
        for name, value in tensors.items():
            *scopes, leaf = name.split("/")
            with contextlib.ExitStack() as stack:
                for scope in scopes:
                    stack.enter_context(tf.compat.v1.variable_scope(scope))
                variable = tf.compat.v1.get_variable(leaf, initializer=tf.constant(value))
            assert variable.op.name == name, variable.op.name
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix), write_meta_graph=False)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tensors = gpt2_variables(HPARAMS, np.random.default_rng(0))
    save_with_saver(tensors, OUT / "model.ckpt")
    np.savez(OUT / "expected.npz", **tensors)
    (OUT / "hparams.json").write_text(json.dumps(HPARAMS, indent=2) + "\n")
    for path in sorted(OUT.iterdir()):
        print(f"{path.stat().st_size:>8,}  {path.relative_to(OUT.parent.parent.parent)}")


if __name__ == "__main__":
    main()
