"""Benchmark GPTModel's generation against Hugging Face's GPT2LMHeadModel, in one process.

Greedy generation with a KV cache, new tokens/s: our ``generate_tokens`` vs
``GPT2LMHeadModel.generate(do_sample=False, use_cache=True)``, for gpt2-small and a small
preset. (Training throughput is ``bench_training.py``, which uses these twin models.)

Both models get the same weights (ours, converted with ``scratchgpt.hub.hf_weights``) and
the runs alternate, so drifting machine load hits both alike. Each number is the median of
the timed repeats after warm-up. Prints a markdown table.

    python bench/bench_model.py            # full run
    python bench/bench_model.py --quick    # fewer repeats, shorter sequences
"""

from __future__ import annotations

import argparse

import torch
from timing import median_seconds
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from scratchgpt.config import ModelConfig, get_preset
from scratchgpt.generation import generate_tokens
from scratchgpt.hub.hf_weights import hf_config_from, scratch_to_hf
from scratchgpt.model import GPTModel


def twin_models(config: ModelConfig) -> tuple[GPTModel, torch.nn.Module]:
    """Our model and transformers' holding the same weights: a GPT2LMHeadModel, or for an
    open family's design (Llama 3, Qwen3, Gemma 3) that family's model, built by transformers
    from its config.json and copied into ours."""
    torch.manual_seed(0)
    if config.pos_encoding == "rope":
        from transformers import AutoConfig, AutoModelForCausalLM

        from scratchgpt.hub.families import hf_config_from_model, state_dict_from_hf

        fields = hf_config_from_model(config)
        hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(**fields))
        ours = GPTModel(config)
        ours.load_state_dict(state_dict_from_hf(hf.state_dict(), fields))
        return ours, hf
    ours = GPTModel(config)
    hf_config = GPT2Config(**hf_config_from(config), bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(hf_config)
    hf.load_state_dict(scratch_to_hf(ours.state_dict(), config))
    return ours, hf


def bench_generation(
    config: ModelConfig, prompt_len: int, new_tokens: int, warmup: int, repeats: int
) -> tuple[float, float, bool]:
    ours, hf = twin_models(config)
    ours.eval()
    hf.eval()
    prompt = torch.randint(0, config.vocab_size, (1, prompt_len), generator=torch.Generator()
                           .manual_seed(1))
    results: dict[str, list[int]] = {}

    def ours_generate() -> None:
        results["ours"] = list(generate_tokens(ours, prompt[0].tolist(), new_tokens))

    def hf_generate() -> None:
        with torch.inference_mode():
            out = hf.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                eos_token_id=None, pad_token_id=0,
            )
        results["hf"] = out[0, prompt_len:].tolist()

    ours_s, hf_s = median_seconds([ours_generate, hf_generate], repeats, warmup)
    return new_tokens / ours_s, new_tokens / hf_s, results["ours"] == results["hf"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    repeats = args.repeats or (3 if args.quick else 5)
    warmup = 1 if args.quick else 2
    micro = get_preset("micro")
    generation_cases = [  # label, config, new tokens after a 16-token prompt
        ("gpt2-small", get_preset("gpt2-small"), 32 if args.quick else 64),
        ("micro", micro, 100),
        # With GPT-2's 50257-token vocabulary, micro's output matrix is 88% of its weights
        # and reading it dominates each step for both libraries. With a tokenizer trained on
        # a small corpus (the README's example has 8192 tokens) per-token overhead shows.
        ("micro, vocab 8192", micro.replace(vocab_size=8192), 100),
    ]

    rows = []
    for name, config, new_tokens in generation_cases:
        ours, hf, same = bench_generation(config, 16, new_tokens, warmup, repeats)
        rows.append((f"greedy generate {name}, {new_tokens} new (tokens/s)", ours, hf,
                     "same tokens" if same else "tokens differ"))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU; "
          f"median of {repeats} after {warmup} warm-up\n")
    print("| benchmark | scratchgpt | transformers | ratio | note |")
    print("|---|---:|---:|---:|---|")
    for label, ours, hf, note in rows:
        print(f"| {label} | {ours:,.1f} | {hf:,.1f} | {ours / hf:.2f}x | {note} |")


if __name__ == "__main__":
    main()
