#!/usr/bin/env bash
# The CUDA paths this CPU-only project cannot test in CI, checked in one short run on a machine
# with a GPU (about 8 minutes on one H100): bf16 with torch.compile and SDPA, FSDP on NCCL
# (a group of one, or every GPU there is), --cpu-offload, activation checkpointing, and the
# GPU rows of the DPO and distributed benchmarks. Each step prints a line "CHECK name: ok" or
# stops the script; the benchmarks' tables go to $OUT (or ./gpu-checks) for bench/RESULTS.md.
#
#     bash bench/gpu_checks.sh
set -euo pipefail
out=${OUT:-gpu-checks}
mkdir -p "$out"
export SCRATCHGPT_CACHE="$out/cache"
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
tiny=(--preset mini --max-steps 30 --eval-every 15 --device cuda)

check() { echo "CHECK $1: ok"; }

scratchgpt pretrain "${tiny[@]}" --precision bf16 --compile --out "$out/compiled" 2> "$out/compiled.log"
check "pretrain bf16 + compile"
torchrun --nproc-per-node "$gpus" -m scratchgpt.cli pretrain "${tiny[@]}" --precision bf16 \
    --strategy fsdp --activation-checkpointing --out "$out/fsdp" 2> "$out/fsdp.log"
check "fsdp bf16 on nccl ($gpus process(es)), activation checkpointing"
scratchgpt pretrain --out "$out/fsdp" --resume --max-steps 40 --device cuda 2> "$out/fsdp-resume.log"
check "fsdp resumed on one process"
scratchgpt generate --model "$out/fsdp" --prompt "The list" --max-new-tokens 10 > /dev/null
check "generate from a sharded run"
torchrun --nproc-per-node "$gpus" -m scratchgpt.cli pretrain "${tiny[@]}" --strategy fsdp \
    --cpu-offload --out "$out/offload" 2> "$out/offload.log"
check "fsdp --cpu-offload (evaluation and sampling included)"

python bench/bench_dpo.py --device cuda --batch-size 8 --prompt-len 256 --answer-len 256 \
    > "$out/bench_dpo.txt"
check "bench_dpo on cuda"
if [ "$gpus" -ge 2 ]; then
    python bench/bench_distributed.py --device cuda --batch-size 8 --seq-len 1024 \
        > "$out/bench_distributed.txt"
    check "bench_distributed on cuda"
fi
