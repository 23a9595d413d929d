"""``--strategy fsdp`` in real ``torchrun`` processes on the CPU, talking through gloo.

N processes, each holding 1/N of the model, train as one process does on the same global
batch: on one "node" or two (two torchruns meeting at a loopback rendezvous), with
accumulation, activation checkpointing and CPU offload, and when fine-tuning (instructions
with LoRA, DPO in full). A kill -9 of one process mid-run leaves only whole checkpoints and
resumes bit for bit; a run resumes on another number of processes with the same losses;
``export`` and ``generate`` read a sharded run; what cannot work says what to change. No
process group is mocked.

Starting processes is most of the cost (a torchrun is an agent and its workers, each importing
PyTorch), so runs are shared: the uninterrupted two-process run is the reference of the kill,
of the export and of the limits, and the killed run also resumes on one process, then on two.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from instruct_runs import TINY, cli_here, finetune_instruct
from pretrain_runs import (
    pretrain_command,
    pretrain_here,
    read_metrics,
    run_env,
    run_here,
    write_corpus,
)
from safetensors.torch import load_file

from scratchgpt.hub.models import load_hf_model
from scratchgpt.run_dir import load_run
from scratchgpt.training.checkpoints import read_shards, verify_checkpoint
from scratchgpt.training.errors import CheckpointError

pytestmark = pytest.mark.skipif(not dist.is_gloo_available() or not Path("/proc/self").is_dir(),
                                reason="needs gloo, and /proc to find torchrun's workers")

STEPS = ["--max-steps", "20", "--eval-every", "5"]  # evaluations at steps 0, 5, ..., 20
SHARDED = [*STEPS, "--strategy", "fsdp"]
TIMEOUT = 300


@dataclass
class Base:
    """The corpus, the token cache, and one process's metrics at a batch of 8."""

    tmp: Path
    corpus: Path
    cache: Path
    single: list[dict[str, Any]]


def _env(cache: Path) -> dict[str, str]:
    """One thread a process, as torchrun sets where it starts several, so that a node of one
    process (where it does not) computes exactly as the others: runs compare bit for bit."""
    return {**run_env(cache), "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str, nproc: int = 2, launch: tuple[str, ...] = ("--standalone",)
              ) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launch, "--nproc-per-node",
            str(nproc), "-m", "scratchgpt.cli", *args]


def torchrun(cache: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node NPROC -m scratchgpt.cli ARGS``, to the end."""
    return subprocess.run(_torchrun(*args, nproc=nproc), env=_env(cache), capture_output=True,
                          text=True, timeout=TIMEOUT)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


def _pretrain(base: Base, run_dir: Path, *extra: str) -> list[str]:
    """``pretrain`` arguments of the tiny model on the corpus (without the interpreter)."""
    return pretrain_command(base.corpus, run_dir, *extra)[3:]


def _same_losses(run: list[dict[str, Any]], single: list[dict[str, Any]],
                 steps: tuple[int, ...] = (0, 5, 10, 15, 20)) -> None:
    """The same evaluations, with losses equal to float precision, and learning."""
    assert [m["step"] for m in run] == [m["step"] for m in single] == list(steps)
    for ours, theirs in zip(run, single, strict=True):
        for key in ("train_loss", "val_loss"):
            assert ours[key] == pytest.approx(theirs[key], abs=1e-5), (key, ours["step"])
    assert run[-1]["train_loss"] < run[0]["train_loss"]


def _same_pretraining(run: list[dict[str, Any]], single: list[dict[str, Any]]) -> None:
    """:func:`_same_losses`, with the same tokens seen (windows: no padding), and learning
    much (the tiny model's loss drops by more than 0.5 in 20 steps)."""
    _same_losses(run, single)
    assert [m["tokens"] for m in run] == [m["tokens"] for m in single]
    assert run[-1]["train_loss"] < run[0]["train_loss"] - 0.5


def _shards(step_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every safetensors file of a sharded checkpoint, loaded: tensors, not bytes (the order
    of a file's JSON header may differ between two writes of the same tensors)."""
    return {str(path.relative_to(step_dir)): load_file(path)
            for path in sorted(step_dir.rglob("*.safetensors"))}


def _equal(a: Any, b: Any) -> bool:
    """Whether two (nested) states are equal, tensors element for element."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k])
                                                                    for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _workers(agent: int) -> dict[int, int]:
    """The pids of a torchrun agent's workers (its children) by their ``LOCAL_RANK``."""
    children = [int(pid) for task in Path(f"/proc/{agent}/task").iterdir()
                for pid in (task / "children").read_text().split()]
    ranks = {}
    for pid in children:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [entry[len(b"LOCAL_RANK="):] for entry in env if entry.startswith(b"LOCAL_RANK=")]
        if rank:
            ranks[int(rank[0])] = pid
    return ranks


def _error_lines(stderr: str) -> list[str]:
    """The error messages in ``stderr``, each on a line of its own: the workers of a torchrun
    share one stderr, unbuffered (``python -u``), where a message and its newline are two
    writes, so another worker's message can come between them."""
    stderr = re.sub(r"(?<!^)(?<!\n)(scratchgpt [a-z ]+: error: )", r"\n\1", stderr)
    return [line.strip() for line in stderr.splitlines() if ": error: " in line]


def _clear_error(done: subprocess.CompletedProcess[str], expected: str) -> None:
    """The workers printed one error line (the same on each) and exited with status 2, with
    no traceback of ours; torchrun's agent then reports the failure in its own words, having
    ended any worker still closing down (SIGTERM: -15)."""
    assert done.returncode != 0
    lines = _error_lines(done.stderr)
    assert lines and len(set(lines)) == 1, done.stderr[-4000:]
    assert expected in lines[0], lines[0]
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", done.stderr)  # torchrun's report
    assert "2" in codes and set(codes) <= {"2", "-15"}, done.stderr[-4000:]
    assert not re.search(r'File ".*scratchgpt', done.stderr), done.stderr[-4000:]


# -- the runs ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    tmp = tmp_path_factory.mktemp("fsdp")
    corpus, cache = write_corpus(tmp / "corpus.txt"), tmp / "cache"
    _ok(pretrain_here(corpus, tmp / "single", cache, *STEPS, "--batch-size", "8"))
    return Base(tmp, corpus, cache, read_metrics(tmp / "single"))


@pytest.fixture(scope="module")
def two_nodes(base: Base) -> Path:
    """Two torchruns of one process each ("nodes") meeting at a c10d rendezvous on the
    loopback, as two machines do at HOST:PORT: the uninterrupted two-process FSDP run."""
    run_dir, port = base.tmp / "two-nodes", _free_port()
    args = _pretrain(base, run_dir, *SHARDED)
    logs = [base.tmp / f"node-{rank}.log" for rank in (0, 1)]
    nodes = []
    for rank, log in enumerate(logs):
        launch = ("--nnodes", "2", "--node-rank", str(rank), "--rdzv-backend", "c10d",
                  "--rdzv-endpoint", f"127.0.0.1:{port}")
        with log.open("w") as out:
            nodes.append(subprocess.Popen(_torchrun(*args, nproc=1, launch=launch),
                                          env=_env(base.cache), stdout=out,
                                          stderr=subprocess.STDOUT))
    try:
        codes = [node.wait(timeout=TIMEOUT) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    return run_dir


@dataclass
class Killed:
    run_dir: Path  # killed, then resumed on two processes to the end
    left: dict[str, bool]  # what checkpoints/ held after the kill: name -> a whole checkpoint
    copy: Path  # the run as the kill left it, for resuming elsewhere
    log: str  # the resumed run's


@pytest.fixture(scope="module")
def killed(base: Base) -> Killed:
    """The two-node run's settings in one torchrun of two processes; when step 10's
    checkpoint is being written (or just was), both workers are frozen, rank 0 (which seals
    and renames checkpoints) is killed -9 and rank 1 let go: torchrun ends the rest. Then
    ``--resume`` on two processes."""
    run_dir = base.tmp / "killed"
    checkpoints, log = run_dir / "checkpoints", base.tmp / "killed.log"
    with log.open("w") as out:
        agent = subprocess.Popen(_torchrun(*_pretrain(base, run_dir, *SHARDED)),
                                 env=_env(base.cache), stdout=out, stderr=subprocess.STDOUT)
    workers: dict[int, int] = {}
    try:
        while not ((checkpoints / ".step-00000010.tmp").exists()
                   or (checkpoints / "step-00000010").exists()):
            assert agent.poll() is None, log.read_text()[-3000:]
            time.sleep(0.002)
        workers = _workers(agent.pid)
        assert sorted(workers) == [0, 1], workers
        for pid in workers.values():
            os.kill(pid, signal.SIGSTOP)
        os.kill(workers[0], signal.SIGKILL)
        os.kill(workers[1], signal.SIGCONT)
        assert agent.wait(timeout=120) != 0, log.read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        for pid in workers.values():  # normally gone: torchrun ends them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    left = {}
    for path in sorted(checkpoints.iterdir()):
        try:
            verify_checkpoint(path)
            left[path.name] = True
        except CheckpointError:  # a leftover temporary directory, or a broken checkpoint
            left[path.name] = False
    copy = base.tmp / "killed-copy"
    shutil.copytree(run_dir, copy)
    resumed = torchrun(base.cache, "pretrain", "--out", str(run_dir), "--resume")
    return Killed(run_dir, left, copy, _ok(resumed))


# -- losses: N processes train as one -----------------------------------------------------------

def test_fsdp_on_two_nodes_trains_as_one_process(base: Base, two_nodes: Path) -> None:
    _same_pretraining(read_metrics(two_nodes), base.single)
    final = two_nodes / "checkpoints" / "step-00000020"
    meta = verify_checkpoint(final)
    assert (meta["world_size"], meta["global_batch"]) == (2, 8)
    assert sorted(_shards(final)) == [f"{part}/shard-0000{rank}-model-00001-of-00001.safetensors"
                                      for part in ("model", "optimizer") for rank in (1, 2)]


def test_accumulation_activation_checkpointing_and_cpu_offload_keep_the_losses(
        base: Base, tmp_path: Path) -> None:
    """2 processes x batch 2 x 2 micro-batches, each block recomputed in backward and each
    process's shards kept in CPU memory (where the CPU computes: nothing moves) = one
    process at batch 8."""
    _ok(torchrun(base.cache, *_pretrain(base, tmp_path / "run", *SHARDED, "--batch-size", "2",
                                        "--grad-accum-steps", "2", "--activation-checkpointing",
                                        "--cpu-offload")))
    _same_pretraining(read_metrics(tmp_path / "run"), base.single)


# -- kill -9 and resume ---------------------------------------------------------------------------

def test_a_kill_leaves_whole_checkpoints_and_resumes_bit_for_bit(
        base: Base, two_nodes: Path, killed: Killed) -> None:
    visible = {name: whole for name, whole in killed.left.items() if not name.startswith(".")}
    assert "step-00000005" in visible and "step-00000020" not in visible, killed.left
    assert all(visible.values()), f"a visible checkpoint is not whole: {killed.left}"
    assert re.search(r"resumed from \S+step-000000(05|10) \(step (5|10)\)", killed.log), killed.log

    assert read_metrics(killed.run_dir) == read_metrics(two_nodes)
    _same_pretraining(read_metrics(killed.run_dir), base.single)
    ours, theirs = (run / "checkpoints" / "step-00000020" for run in (killed.run_dir, two_nodes))
    assert _equal(_shards(ours), _shards(theirs))
    assert _equal(*(torch.load(run / "state.pt", weights_only=True) for run in (ours, theirs)))
    assert not [p.name for p in (killed.run_dir / "checkpoints").iterdir()
                if p.name.startswith(".")]  # the resumed run rewrote step 10 over its leftovers


def test_a_run_resumes_on_one_process_then_on_two(base: Base, killed: Killed) -> None:
    """2 -> 1 (FSDP in one process: a group of one), then 1 -> 2: each takes the batch per
    process that keeps the global batch, and says so; the losses are one process's."""
    done = run_here(["pretrain", "--out", str(killed.copy), "--resume"], base.cache)
    assert done.returncode == 0, done.stderr
    assert ("resuming on 1 process(es), 2 before: --batch-size 8 per process keeps the run's "
            "global batch of 8") in done.stderr
    _same_pretraining(read_metrics(killed.copy), base.single)

    checkpoints = killed.copy / "checkpoints"
    for name in ("step-00000020", "best"):  # back to step 15, which one process wrote
        shutil.rmtree(checkpoints / name)
    assert verify_checkpoint(checkpoints / "step-00000015")["world_size"] == 1
    log = _ok(torchrun(base.cache, "pretrain", "--out", str(killed.copy), "--resume"))
    assert ("resuming on 2 process(es), 1 before: --batch-size 4 per process keeps the run's "
            "global batch of 8") in log
    assert "resumed from" in log and "step-00000015 (step 15)" in log
    _same_pretraining(read_metrics(killed.copy), base.single)


# -- loaders read a sharded run -------------------------------------------------------------------

def test_export_of_a_sharded_run_holds_its_consolidated_weights(
        base: Base, two_nodes: Path, tmp_path: Path) -> None:
    done = cli_here("export", str(two_nodes), "--format", "hf", "--out", str(tmp_path / "hf"),
                    cache=base.cache)
    assert done.returncode == 0, done.stderr
    consolidated = read_shards(two_nodes / "checkpoints" / "best" / "model")
    exported = load_hf_model(tmp_path / "hf").state_dict()
    assert consolidated and all(torch.equal(exported[name], tensor)
                                for name, tensor in consolidated.items())
    with warnings.catch_warnings(record=True) as caught:  # none from consolidating
        warnings.simplefilter("always")
        generated = cli_here("generate", "--model", str(two_nodes), "--prompt", "The",
                             "--max-new-tokens", "4", cache=base.cache)
    assert generated.returncode == 0 and generated.stdout.startswith("The"), generated.stderr
    assert not [str(w.message) for w in caught if "torch.distributed" in str(w.message)]


# -- clear limits ---------------------------------------------------------------------------------

def test_data_too_small_for_every_process_says_so(base: Base, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "small.txt", chars=700)  # 13 windows of 32 tokens
    done = torchrun(base.cache, "pretrain", "--data", str(corpus), "--tokenizer",
                    str(base.tmp / "single" / "tokenizer.json"), "--preset", "nano",
                    "--context-length", "32", "--batch-size", "8", "--max-steps", "2",
                    "--strategy", "fsdp", "--out", str(tmp_path / "run"))
    _clear_error(done, "only 13 training windows, fewer than one batch of 16 (8 per process x 2 "
                       "processes)")
    assert not (tmp_path / "run").exists()


def test_a_resume_on_processes_that_do_not_divide_the_global_batch_says_so(
        base: Base, two_nodes: Path, tmp_path: Path) -> None:
    run_dir = shutil.copytree(two_nodes, tmp_path / "run")
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    done = torchrun(base.cache, "pretrain", "--out", str(run_dir), "--resume", nproc=3)
    _clear_error(done, "trained with a global batch of 8 sequences, which 3 process(es) x 1 "
                       "micro-batch(es) do not divide: resume on 1, 2, 4, 8 process(es)")
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before


@pytest.mark.parametrize(("flags", "expected"), [
    (["--strategy", "fsdp", "--backend", "nccl"], "backend nccl connects CUDA GPUs"),
    (["--strategy", "fsdp", "--precision", "fp16"], "--strategy fsdp trains in bf16 or fp32"),
    (["--cpu-offload"], "--cpu-offload: offloads FSDP's shards: use it with --strategy fsdp"),
], ids=["nccl-on-cpu", "fsdp-fp16", "offload-without-fsdp"])
def test_settings_that_cannot_run_say_what_to_change(base: Base, tmp_path: Path,
                                                     flags: list[str], expected: str) -> None:
    done = run_here(_pretrain(base, tmp_path / "run", "--max-steps", "2", *flags), base.cache)
    assert done.returncode == 2
    assert _error_lines(done.stderr) == done.stderr.strip().splitlines(), done.stderr
    assert len(_error_lines(done.stderr)) == 1 and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


# -- fine-tuning shards too -----------------------------------------------------------------------

def test_lora_instruct_under_fsdp_trains_as_one_process_and_loads(
        instruction_records: Path, instruct_base: Path, instruct_cache: Path,
        tmp_path: Path) -> None:
    """The frozen base sharded, the adapters trained: two processes at batch 2 = one
    process at batch 4, though the two halves of each batch hold different numbers of answer
    tokens (each micro-batch's mean is weighed by its share of the step's tokens);
    ``generate`` and ``export`` read the sharded run (consolidated, adapters merged)."""
    lora = ["--train", "lora", "--eval-every", "2", "--lr", "1e-3"]
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    done = finetune_instruct(instruction_records, instruct_base, single, *lora,
                             "--batch-size", "4", cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    _ok(torchrun(instruct_cache, "finetune", "instruct", "--data", str(instruction_records),
                 "--model", str(instruct_base), "--out", str(sharded), *TINY, *lora,
                 "--batch-size", "2", "--strategy", "fsdp"))
    _same_losses(read_metrics(sharded), read_metrics(single), steps=(0, 2, 4))

    generated = cli_here("generate", "--model", str(sharded), "--instruction", "--prompt",
                         "Name a fruit.", "--max-new-tokens", "4", cache=instruct_cache)
    assert generated.returncode == 0, generated.stderr
    out = tmp_path / "hf"
    exported = cli_here("export", str(sharded), "--format", "hf", "--out", str(out),
                        cache=instruct_cache)
    assert exported.returncode == 0, exported.stderr
    merged = load_run(sharded)[0].state_dict()
    assert all(torch.equal(merged[name], tensor)
               for name, tensor in load_hf_model(out).state_dict().items())


def test_dpo_under_fsdp_trains_as_one_process(shared_assets: Path, instruct_base: Path,
                                              instruct_cache: Path, tmp_path: Path) -> None:
    """Full fine-tuning sharded, against a frozen reference: two processes at batch 2 = one
    at 4 (DPO's loss is a mean over pairs)."""
    records = json.loads((shared_assets / "instructions" /
                          "instruction-data-with-preference.json").read_text(encoding="utf-8"))
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps(records[:40]), encoding="utf-8")
    dpo = ["finetune", "dpo", "--data", str(pairs), "--model", str(instruct_base), "--train",
           "all", "--lr", "1e-4", "--eval-every", "2", "--eval-batches", "1", "--epochs", "0",
           "--max-steps", "4", "--max-new-tokens", "2"]
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    threads = torch.get_num_threads()
    try:
        done = cli_here(*dpo, "--out", str(single), "--batch-size", "4", "--threads", "1",
                        cache=instruct_cache)
    finally:
        torch.set_num_threads(threads)
    assert done.returncode == 0, done.stderr
    _ok(torchrun(instruct_cache, *dpo, "--out", str(sharded), "--batch-size", "2",
                 "--strategy", "fsdp"))
    _same_losses(read_metrics(sharded), read_metrics(single), steps=(0, 2, 4))
