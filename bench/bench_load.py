"""Benchmark loading a model's weights, and decoding with them, against transformers.

1. **Load**: a random model of ``--preset``'s shape (``gpt2-small``; ``qwen3-0.6b``,
   ``llama-3.2-1b``, ``gemma-3-270m`` for today's open families), written once by
   transformers' ``save_pretrained`` into a temporary directory (GPT-2 in float32; an open
   family in bfloat16, as the hub publishes them), read by our ``load_hf_model`` and by
   ``AutoModelForCausalLM.from_pretrained``, both asked for ``--dtype`` (default ``auto``:
   float32 on a CPU, bfloat16 on a GPU that has it). Every load runs in a fresh Python
   process, so neither gains from the other's caches; its peak memory above the resident
   memory after the imports is compared with the size of the weights in the dtype asked.
   Both are also measured up to the end of the first forward pass (transformers maps the
   file and reads a weight only when it is used), and from before the imports.
2. **Decode**: greedy new tokens/s of the two models (float32 on a CPU), one row
   (ours: ``generate_tokens``) and ``--rows`` rows at once (ours: ``generate_batch``),
   against ``generate(do_sample=False)``, each with its KV cache. The runs alternate, so
   drifting machine load hits both alike.

Each number is the median of ``--repeats`` runs (5). Prints markdown tables.

    python bench/bench_load.py                                # gpt2-small
    python bench/bench_load.py --preset qwen3-0.6b --new-tokens 32
    python bench/bench_load.py --preset gpt2-xl --new-tokens 0 --repeats 1   # load only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOADERS = {"ours": "scratchgpt load_hf_model", "hf": "transformers from_pretrained"}


def _rss_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def load_once(loader: str, directory: str, dtype: str, device: str) -> None:
    """Child process: import, load the model, run one forward pass; print the seconds and the
    peak memory above the post-import baseline after each, as JSON.

    The peak is ``VmHWM``, reset to the current RSS after the imports (``/proc/self/clear_refs``
    ``5``). ``ru_maxrss`` would not do: Linux carries it over from the parent across
    fork + exec, so a child of a big parent reports the parent's peak.
    """
    process_start = time.perf_counter()
    import torch

    if loader == "ours":
        from scratchgpt.hub.models import load_hf_model

        def load(path: str) -> torch.nn.Module:
            return load_hf_model(path, dtype).to(device)
    else:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        from scratchgpt.hub.hf_checkpoint import resolve_dtype

        hf_logging.disable_progress_bar()

        def load(path: str) -> torch.nn.Module:
            return AutoModelForCausalLM.from_pretrained(
                path, dtype=resolve_dtype(dtype, device), device_map=device).eval()
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _rss_bytes("VmRSS")
    start = time.perf_counter()
    model = load(directory)
    loaded, load_peak = time.perf_counter() - start, _rss_bytes("VmHWM") - baseline
    with torch.inference_mode():
        model(torch.zeros(1, 8, dtype=torch.long, device=device))
    if device == "cuda":
        torch.cuda.synchronize()
    first, first_peak = time.perf_counter() - start, _rss_bytes("VmHWM") - baseline
    tensors = {t.data_ptr(): t for t in model.state_dict().values()}  # a tied one once
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    print(json.dumps({"load_s": loaded, "load_peak": load_peak, "forward_s": first,
                      "forward_peak": first_peak, "total_s": time.perf_counter() - process_start,
                      "weights": weights}))


def measure_loads(directory: Path, dtype: str, device: str,
                  repeats: int) -> dict[str, dict[str, float]]:
    """Median times and peaks per loader, the loaders taking turns in fresh processes."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in LOADERS}
    for _ in range(repeats):
        for name in LOADERS:
            done = subprocess.run(
                [sys.executable, __file__, "--child", name, str(directory), dtype, device],
                capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"the {LOADERS[name]} load failed:\n{done.stderr}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {name: {key: statistics.median(r[key] for r in results) for key in results[0]}
            for name, results in runs.items()}


def measure_decoding(directory: Path, rows: int, new_tokens: int, device: str,
                     repeats: int) -> tuple[float, float, bool]:
    """Median new tokens/s (all rows together) of ours and of transformers, float32 on a CPU
    (``auto`` elsewhere), and whether they chose the same tokens."""
    import torch
    from timing import median_seconds
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from scratchgpt.generation import generate_batch, generate_tokens
    from scratchgpt.hub.hf_checkpoint import resolve_dtype
    from scratchgpt.hub.models import load_hf_model

    hf_logging.disable_progress_bar()
    ours = load_hf_model(directory, "auto").to(device)
    theirs = AutoModelForCausalLM.from_pretrained(
        directory, dtype=resolve_dtype("auto", device), device_map=device).eval()
    vocab = ours.config.vocab_size
    prompts = torch.randint(0, vocab, (rows, 8), generator=torch.Generator().manual_seed(0))

    def run_ours() -> list[list[int]]:
        if rows == 1:
            return [list(generate_tokens(ours, prompts[0].tolist(), new_tokens))]
        return generate_batch(ours, prompts.tolist(), new_tokens)

    def run_theirs() -> list[list[int]]:
        with torch.inference_mode():
            out = theirs.generate(prompts.to(device), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
        return out[:, prompts.shape[1]:].tolist()

    same = run_ours() == run_theirs()  # also the warm-up
    ours_s, theirs_s = median_seconds([run_ours, run_theirs], repeats)
    return rows * new_tokens / ours_s, rows * new_tokens / theirs_s, same


def write_model(directory: Path, preset: str) -> None:
    """A random model of the preset's shape in Hugging Face's layout: GPT-2 in float32, an
    open family in bfloat16."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from scratchgpt.config import get_preset
    from scratchgpt.hub.families import hf_config_from_model
    from scratchgpt.hub.hf_weights import hf_config_from

    torch.manual_seed(0)
    config = get_preset(preset)
    if config.pos_encoding != "rope":
        GPT2LMHeadModel(GPT2Config(**hf_config_from(config))).save_pretrained(directory)
        return
    fields = hf_config_from_model(config)
    hf_config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    model.save_pretrained(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64, help="0: loading only")
    parser.add_argument("--rows", type=int, default=8, help="rows decoded at once, besides 1")
    parser.add_argument("--preset", default="gpt2-small", help="the model's shape")
    parser.add_argument("--dtype", default="auto", help="what both loaders are asked for")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--child", nargs=4, metavar=("LOADER", "DIR", "DTYPE", "DEVICE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        load_once(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_model(directory, args.preset)
        loads = measure_loads(directory, args.dtype, args.device, args.repeats)
        decoding = {rows: measure_decoding(directory, rows, args.new_tokens, args.device,
                                           args.repeats)
                    for rows in (1, args.rows) if args.new_tokens}

    mib = 2**20
    weights = loads["ours"]["weights"]
    print(f"{args.preset}-shaped model, {weights / mib:,.1f} MiB of weights as loaded "
          f"(--dtype {args.dtype}, {args.device}); median of {args.repeats}, each load in a "
          "fresh process; peak memory is above the RSS after the imports\n")
    print("| loader | load (s) | peak (MiB) | peak / weights | load + 1st forward (s) "
          "| peak / weights | imports + load + forward (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, label in LOADERS.items():
        r = loads[name]
        print(f"| {label} | {r['load_s']:.2f} | {r['load_peak'] / mib:,.0f} | "
              f"{r['load_peak'] / weights:.2f}x | {r['forward_s']:.2f} | "
              f"{r['forward_peak'] / weights:.2f}x | {r['total_s']:.2f} |")
    ours, hf = loads["ours"], loads["hf"]
    print(f"| ours / transformers | {ours['load_s'] / hf['load_s']:.2f}x | | | "
          f"{ours['forward_s'] / hf['forward_s']:.2f}x | | "
          f"{ours['total_s'] / hf['total_s']:.2f}x |\n")
    if not decoding:
        return
    print(f"Greedy decoding, {args.new_tokens} new tokens per row after an 8-token prompt, "
          "new tokens/s of all rows together\n")
    print("| rows | scratchgpt | transformers generate | ours / transformers | same tokens |")
    print("|---:|---:|---:|---:|---|")
    for rows, (ours_tps, hf_tps, same) in decoding.items():
        print(f"| {rows} | {ours_tps:.1f} | {hf_tps:.1f} | {ours_tps / hf_tps:.2f}x | {same} |")


if __name__ == "__main__":
    main()
