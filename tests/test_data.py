"""Token files on disk, sliding windows, and the batch streams built from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchgpt.data import (
    ShuffledBatches,
    TokenWindows,
    create_dataloader,
    read_token_file,
    token_dtype,
    write_token_file,
)

# -- token files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vocab_size", "dtype"),
    [(256, np.uint16), (50257, np.uint16), (65536, np.uint16), (65537, np.uint32),
     (100277, np.uint32)],
)
def test_token_dtype_is_the_smallest_that_holds_every_id(vocab_size: int, dtype: type) -> None:
    assert token_dtype(vocab_size) == np.dtype(dtype)
    assert np.iinfo(token_dtype(vocab_size)).max >= vocab_size - 1


@pytest.mark.parametrize(
    ("vocab_size", "dtype"), [(50257, np.uint16), (65536, np.uint16), (65537, np.uint32)]
)
def test_token_file_round_trip(tmp_path: Path, vocab_size: int, dtype: type) -> None:
    rng = np.random.default_rng(vocab_size)
    chunks = [rng.integers(0, vocab_size, size=n) for n in (1000, 0, 1, 37)]
    chunks.append(np.array([0, vocab_size - 1]))  # both ends of the id range
    chunks.append([5, 6, 7])  # plain lists are accepted too
    target = tmp_path / "tokens.npy"

    assert write_token_file(target, iter(chunks), vocab_size) == target

    tokens = read_token_file(target)
    expected = np.concatenate([np.asarray(c, dtype=np.int64) for c in chunks])
    assert tokens.dtype == np.dtype(dtype)
    assert tokens.shape == (len(expected),)
    np.testing.assert_array_equal(tokens.astype(np.int64), expected)
    # an ordinary .npy file: numpy reads it without our help, and it holds only the ids
    loaded = np.load(target)
    assert loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded, tokens)
    assert target.stat().st_size < len(expected) * np.dtype(dtype).itemsize + 256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.npy"]  # no temp files


def test_token_file_is_memory_mapped_read_only(tmp_path: Path) -> None:
    target = write_token_file(tmp_path / "t.npy", [np.arange(500)], 1000)
    tokens = read_token_file(target)
    assert isinstance(tokens, np.memmap)
    assert Path(tokens.filename) == target.resolve()
    assert not tokens.flags.writeable
    with pytest.raises(ValueError):
        tokens[0] = 1
    assert int(tokens[499]) == 499


def test_empty_token_file(tmp_path: Path) -> None:
    target = write_token_file(tmp_path / "empty.npy", [], 100)
    assert read_token_file(target).shape == (0,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.npy"]


def test_token_file_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "tokens.npy"
    seen_during_write: list[list[str]] = []

    def chunks():
        yield np.arange(100)
        seen_during_write.append(sorted(p.name for p in tmp_path.iterdir()))
        yield np.arange(100)
        raise RuntimeError("tokenizer crashed")

    with pytest.raises(RuntimeError, match="tokenizer crashed"):
        write_token_file(target, chunks(), 1000)
    # the ids streamed into a temporary file, never into the target itself ...
    assert seen_during_write and seen_during_write[0]
    assert "tokens.npy" not in seen_during_write[0]
    # ... and the failure left nothing behind
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_token_file(tmp_path: Path) -> None:
    target = write_token_file(tmp_path / "tokens.npy", [np.arange(10)], 100)

    def chunks():
        yield np.arange(50, 60)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_token_file(target, chunks(), 100)
    np.testing.assert_array_equal(read_token_file(target), np.arange(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.npy"]


def test_two_writers_of_one_token_file_do_not_mix(tmp_path: Path) -> None:
    # two runs that tokenize the same corpus at once write the same cached file
    target = tmp_path / "tokens.npy"

    def chunks():
        yield np.arange(100)
        write_token_file(target, [np.arange(500, 510)], 1000)  # the other run, start to finish
        np.testing.assert_array_equal(read_token_file(target), np.arange(500, 510))
        yield np.arange(100, 200)

    write_token_file(target, chunks(), 1000)
    np.testing.assert_array_equal(read_token_file(target), np.arange(200))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.npy"]


@pytest.mark.parametrize("bad", [[0, 1, 100], [-1, 3]])
def test_token_id_out_of_range_is_an_error(tmp_path: Path, bad: list[int]) -> None:
    target = tmp_path / "tokens.npy"
    with pytest.raises(ValueError, match=r"out of range 0\.\.99"):
        write_token_file(target, [np.arange(5), np.asarray(bad)], 100)
    assert list(tmp_path.iterdir()) == []


def test_read_token_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.npy"):
        read_token_file(tmp_path / "nothing.npy")
    np.save(tmp_path / "floats.npy", np.zeros(4, dtype=np.float32))
    np.save(tmp_path / "matrix.npy", np.zeros((2, 2), dtype=np.uint16))
    for name in ("floats.npy", "matrix.npy"):
        with pytest.raises(ValueError, match="not a token file"):
            read_token_file(tmp_path / name)


# -- windows ---------------------------------------------------------------------------------


def random_tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 50257, size=n).astype(np.uint16)


# 20 tokens, context 4: a window needs 5 tokens, so it may start at 0..15.
@pytest.mark.parametrize(
    ("stride", "starts"),
    [
        (None, [0, 4, 8, 12]),  # default stride = context length
        (4, [0, 4, 8, 12]),
        (1, list(range(16))),
        (3, [0, 3, 6, 9, 12, 15]),
        (5, [0, 5, 10, 15]),
        (7, [0, 7, 14]),
        (16, [0]),
        (100, [0]),
    ],
)
def test_windows_count_and_contents(stride: int | None, starts: list[int]) -> None:
    tokens = random_tokens(20)
    windows = TokenWindows(tokens, context_length=4, stride=stride)
    assert len(windows) == len(starts)
    for index, start in enumerate(starts):
        x, y = windows[index]
        assert x.dtype == y.dtype == torch.int64
        assert x.tolist() == tokens[start : start + 4].tolist()
        assert y.tolist() == tokens[start + 1 : start + 5].tolist()  # the next token each
    with pytest.raises(IndexError):
        windows[len(starts)]
    with pytest.raises(IndexError):
        windows[-1]


def test_exactly_one_window() -> None:
    windows = TokenWindows(np.arange(9), context_length=8)
    assert len(windows) == 1
    x, y = windows[0]
    assert x.tolist() == list(range(8))
    assert y.tolist() == list(range(1, 9))


def test_too_few_tokens_says_how_many_and_how_many_are_needed() -> None:
    with pytest.raises(ValueError, match=r"8 tokens are too few.*context of 8 needs 9"):
        TokenWindows(np.arange(8), context_length=8)


@pytest.mark.parametrize(("context_length", "stride"), [(0, None), (-3, None), (4, -1), (4, 0)])
def test_context_and_stride_must_be_positive(context_length: int, stride: int | None) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        TokenWindows(np.arange(100), context_length, stride)


def test_batch_shapes_and_contents() -> None:
    tokens = random_tokens(200)
    windows = TokenWindows(tokens, context_length=6, stride=2)
    for indices in ([0, 5, 3], torch.tensor([7, 7, 1, 0, 2])):
        x, y = windows.batch(indices)
        assert x.shape == y.shape == (len(indices), 6)
        assert x.dtype == y.dtype == torch.int64
        for row, i in enumerate(indices):
            wx, wy = windows[int(i)]
            assert torch.equal(x[row], wx) and torch.equal(y[row], wy)
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_windows_over_a_memory_mapped_token_file(tmp_path: Path) -> None:
    tokens = random_tokens(1000, seed=3)
    mapped = read_token_file(write_token_file(tmp_path / "t.npy", [tokens], 50257))
    windows = TokenWindows(mapped, context_length=16, stride=8)
    assert len(windows) == (1000 - 17) // 8 + 1
    x, y = windows.batch([len(windows) - 1])
    start = (len(windows) - 1) * 8
    assert x[0].tolist() == tokens[start : start + 16].tolist()
    assert y[0].tolist() == tokens[start + 1 : start + 17].tolist()


# -- create_dataloader ------------------------------------------------------------------------


def loader_batches(seed: int, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    options = {"batch_size": 4, "context_length": 8, "stride": 8} | kwargs
    return list(create_dataloader(random_tokens(500), seed=seed, **options))


def test_dataloader_shapes_and_drop_last() -> None:
    batches = loader_batches(seed=0)
    windows = (500 - 9) // 8 + 1  # 62
    assert len(batches) == windows // 4  # the incomplete last batch is dropped
    for x, y in batches:
        assert x.shape == y.shape == (4, 8)
        assert torch.equal(x[:, 1:], y[:, :-1])
    kept = loader_batches(seed=0, drop_last=False)
    assert len(kept) == windows // 4 + 1 and kept[-1][0].shape == (windows % 4, 8)


def test_dataloader_without_shuffle_keeps_window_order() -> None:
    tokens = random_tokens(500)
    x, _ = loader_batches(seed=0, shuffle=False)[1]
    assert x[0].tolist() == tokens[32:40].tolist()  # window 4 opens the second batch


def test_dataloader_same_seed_same_batches_different_seed_different() -> None:
    first, again, other = loader_batches(seed=7), loader_batches(seed=7), loader_batches(seed=8)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # a shuffle is a permutation: without drop_last, both seeds see every window once
    every = [torch.cat([x for x, _ in loader_batches(seed, drop_last=False)]) for seed in (7, 8)]
    assert sorted(map(tuple, every[0].tolist())) == sorted(map(tuple, every[1].tolist()))
    assert len(every[0]) == 62


# -- ShuffledBatches over windows ---------------------------------------------------------

# With tokens 0, 1, 2, ... and stride 4, window i starts with token 4 * i.
STRIDE = 4


def counting_windows(count: int) -> TokenWindows:
    tokens = np.arange(count * STRIDE + 1, dtype=np.uint32)
    windows = TokenWindows(tokens, context_length=STRIDE, stride=STRIDE)
    assert len(windows) == count
    return windows


def window_ids(batch: tuple[torch.Tensor, torch.Tensor]) -> list[int]:
    return (batch[0][:, 0] // STRIDE).tolist()


def take(stream: ShuffledBatches, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(stream) for _ in range(n)]


def same_batches(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    pairs = zip(a, b, strict=True)
    return all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in pairs)


def test_window_batches_visit_every_window_once_per_epoch() -> None:
    windows = counting_windows(50)
    stream = ShuffledBatches(windows, batch_size=8, seed=3)
    assert stream.batches_per_epoch == 6  # 50 // 8; two windows are left out each epoch
    epochs = [[i for batch in take(stream, 6) for i in window_ids(batch)] for _ in range(3)]
    for seen in epochs:
        assert len(seen) == len(set(seen)) == 48
        assert set(seen) <= set(range(50))
    assert epochs[0] != epochs[1] != epochs[2]  # each epoch has its own order
    x, y = windows.batch([0])
    assert x.shape == (1, STRIDE) and y.shape == (1, STRIDE)


def test_window_batches_same_seed_same_stream() -> None:
    windows = counting_windows(50)
    a = take(ShuffledBatches(windows, 8, seed=1), 8)
    b = take(ShuffledBatches(windows, 8, seed=1), 8)
    c = take(ShuffledBatches(windows, 8, seed=2), 8)
    assert same_batches(a, b)
    assert not same_batches(a, c)


@pytest.mark.parametrize("k", [0, 1, 4, 5, 6, 7, 9, 13])  # 6 batches per epoch
def test_window_batches_resume_from_state_dict(k: int) -> None:
    windows = counting_windows(50)
    total = 15
    reference = take(ShuffledBatches(windows, 8, seed=11), total)

    interrupted = ShuffledBatches(windows, 8, seed=11)
    assert same_batches(take(interrupted, k), reference[:k])
    state = json.loads(json.dumps(interrupted.state_dict()))  # plain data, fit for a checkpoint

    resumed = ShuffledBatches(windows, 8, seed=11)
    resumed.load_state_dict(state)
    assert same_batches(take(resumed, total - k), reference[k:])
    # the original, had it kept going, would have given the same batches
    assert same_batches(take(interrupted, total - k), reference[k:])


def test_window_batches_state_dict_of_a_fresh_stream_restarts_it() -> None:
    windows = counting_windows(30)
    stream = ShuffledBatches(windows, 4, seed=0)
    start = stream.state_dict()
    first = take(stream, 10)
    stream.load_state_dict(start)
    assert same_batches(take(stream, 10), first)


@pytest.mark.parametrize("world_size", [2, 3])
def test_window_batches_shards_add_up_to_one_big_batch(world_size: int) -> None:
    windows = counting_windows(61)
    b = 3
    single = ShuffledBatches(windows, b * world_size, seed=5)
    ranks = [ShuffledBatches(windows, b, seed=5, rank=r, world_size=world_size)
             for r in range(world_size)]
    assert all(r.batches_per_epoch == single.batches_per_epoch for r in ranks)
    steps = 2 * single.batches_per_epoch + 1  # crosses two epoch boundaries
    for _ in range(steps):
        x, y = next(single)
        parts = [next(r) for r in ranks]
        assert all(p[0].shape == (b, STRIDE) for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        ids = [i for p in parts for i in window_ids(p)]
        assert len(set(ids)) == len(ids)  # no window is trained on twice in a step


def test_window_batches_need_one_global_batch() -> None:
    windows = counting_windows(10)
    with pytest.raises(ValueError, match=r"only 10 training windows, fewer than one batch of 12"):
        ShuffledBatches(windows, batch_size=4, world_size=3)
    with pytest.raises(ValueError, match="fewer than one batch of 11"):
        ShuffledBatches(windows, batch_size=11)
    exact = ShuffledBatches(windows, batch_size=10)  # exactly one batch per epoch is enough
    assert exact.batches_per_epoch == 1
    assert sorted(window_ids(next(exact))) == list(range(10))
    assert sorted(window_ids(next(exact))) == list(range(10))
