"""Benchmark loading GPT-2 weights, and generating with them, against transformers.

1. **Load**: a ``gpt2-small``-shaped (or ``--preset``) random ``model.safetensors`` (written
   once by transformers' ``save_pretrained`` into a temporary directory), read by our
   ``load_hf_model`` and by ``GPT2LMHeadModel.from_pretrained``. Every load runs in a fresh
   Python process, so neither gains from the other's caches; its peak memory above the resident
   memory after the imports is compared with the size of the weights file. Both are also
   measured up to the first forward pass (transformers maps the file and reads a weight only
   when it is used), and from before the imports (``import transformers`` is slow; ours pays a
   similar one-off cost inside the load: building a model on the meta device runs
   ``nn.Embedding``'s ``normal_`` there, which makes PyTorch import ``torch._dynamo``, about
   1 s).
2. **Generate**: greedy new tokens/s of the two loaded models on the same prompt, ours with
   its KV cache (``generate_tokens``) and ``GPT2LMHeadModel.generate(do_sample=False)``.
   The runs alternate, so drifting machine load hits both alike.

Each number is the median of ``--repeats`` runs (5). Prints markdown tables.

    python bench/bench_load.py                  # full run
    python bench/bench_load.py --new-tokens 16  # shorter generation
    python bench/bench_load.py --preset gpt2-xl --new-tokens 0 --repeats 1   # 6 GB, load only
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


def load_once(loader: str, directory: str) -> None:
    """Child process: import, load the model, run one forward pass; print the seconds and the
    peak memory above the post-import baseline after each, as JSON.

    The peak is ``VmHWM``, reset to the current RSS after the imports (``/proc/self/clear_refs``
    ``5``). ``ru_maxrss`` would not do: Linux carries it over from the parent across
    fork + exec, so a child of a big parent reports the parent's peak.
    """
    process_start = time.perf_counter()
    import torch

    if loader == "ours":
        from scratchgpt.hub.gpt2 import load_hf_model as load
    else:
        from transformers import GPT2LMHeadModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        load = GPT2LMHeadModel.from_pretrained
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _rss_bytes("VmRSS")
    start = time.perf_counter()
    model = load(directory)
    loaded, load_peak = time.perf_counter() - start, _rss_bytes("VmHWM") - baseline
    with torch.inference_mode():
        model(torch.zeros(1, 8, dtype=torch.long))
    first, first_peak = time.perf_counter() - start, _rss_bytes("VmHWM") - baseline
    print(json.dumps({"load_s": loaded, "load_peak": load_peak, "forward_s": first,
                      "forward_peak": first_peak, "total_s": time.perf_counter() - process_start}))


def measure_loads(directory: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Median times and peaks per loader, the loaders taking turns in fresh processes."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in LOADERS}
    for _ in range(repeats):
        for name in LOADERS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, str(directory)],
                check=True, capture_output=True, text=True,
            ).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    return {name: {key: statistics.median(r[key] for r in results) for key in results[0]}
            for name, results in runs.items()}


def measure_generation(
    directory: Path, new_tokens: int, repeats: int
) -> tuple[float, float, bool]:
    """Median new tokens/s of ours and of transformers, and whether they chose the same tokens."""
    import torch
    from timing import median_seconds
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from scratchgpt.generation import generate_tokens
    from scratchgpt.hub.gpt2 import load_hf_model

    hf_logging.disable_progress_bar()
    ours, theirs = load_hf_model(directory), GPT2LMHeadModel.from_pretrained(directory).eval()
    prompt = torch.randint(0, 50257, (1, 8), generator=torch.Generator().manual_seed(0))

    def run_ours() -> list[int]:
        return list(generate_tokens(ours, prompt[0].tolist(), new_tokens))

    def run_theirs() -> list[int]:
        with torch.inference_mode():
            out = theirs.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[0, prompt.shape[1]:].tolist()

    same = run_ours() == run_theirs()  # also the warm-up
    ours_s, theirs_s = median_seconds([run_ours, run_theirs], repeats)
    return new_tokens / ours_s, new_tokens / theirs_s, same


def write_model(directory: Path, preset: str) -> int:
    """A random GPT-2 of the preset's shape in Hugging Face's layout; returns the weights
    file's size."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from scratchgpt.config import get_preset
    from scratchgpt.hub.hf_weights import hf_config_from

    torch.manual_seed(0)
    config = GPT2Config(**hf_config_from(get_preset(preset)))
    GPT2LMHeadModel(config).save_pretrained(directory)
    return (directory / "model.safetensors").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64, help="0: loading only")
    parser.add_argument("--preset", default="gpt2-small", help="the model's shape")
    parser.add_argument("--child", nargs=2, metavar=("LOADER", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        load_once(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        weights = write_model(directory, args.preset)
        loads = measure_loads(directory, args.repeats)
        if args.new_tokens:
            generation = measure_generation(directory, args.new_tokens, args.repeats)

    mib = 2**20
    print(f"{args.preset}-shaped model.safetensors: {weights / mib:,.1f} MiB; median of "
          f"{args.repeats}, each load in a fresh process; peak memory is above the RSS after "
          "the imports\n")
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
    if not args.new_tokens:
        return
    ours_tps, hf_tps, same = generation
    print(f"Greedy generation, {args.new_tokens} new tokens after an 8-token prompt "
          f"(same tokens: {same})\n")
    print("| model | new tokens/s |")
    print("|---|---:|")
    print(f"| scratchgpt generate_tokens (KV cache) | {ours_tps:.1f} |")
    print(f"| transformers generate(do_sample=False) | {hf_tps:.1f} |")
    print(f"| ours / transformers | {ours_tps / hf_tps:.2f}x |")


if __name__ == "__main__":
    main()
