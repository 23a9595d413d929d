"""Read a TensorFlow checkpoint without TensorFlow: OpenAI published GPT-2 as one.

``tf.train.Saver`` writes a *tensor bundle*, two files beside a prefix such as ``model.ckpt``:

* ``model.ckpt.data-00000-of-00001``: the tensors' raw bytes one after another
  (little-endian, row-major), nothing else;
* ``model.ckpt.index``: where each tensor is. It is an immutable sorted key-value table in
  LevelDB's *SSTable* format, mapping each tensor name to a ``BundleEntryProto``
  (dtype, shape, shard, byte offset, byte size) serialised as a protocol buffer.

An SSTable ends with a 48-byte *footer*: two block handles (``varint offset, varint size``) for
the metaindex block (unused here) and the index block, zero padding, and the magic number
``0xdb4775248b80fb57``. The index block maps keys to the handles of the data blocks holding
them. Every block is a run of entries, each ``varint shared, varint unshared, varint value_len,
key[shared:], value``: a key stores only where it differs from the previous key (prefix
compression). A trailer of 4-byte *restart* offsets, for binary search, closes each block,
and after each block on disk come one compression-type byte and a masked CRC32C checksum.

Only the handful of protobuf fields needed are decoded, by hand (see :func:`_proto_fields`).
The index's block checksums are verified; the tensors' own CRC32C checksums are not (in pure
Python that would take minutes for GPT-2): the data file's size and every tensor's byte count
are checked instead, and ``scratchgpt download`` verifies the files it fetches.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles of at most 20 bytes each, padded to 40, + 8 magic bytes
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked CRC32C (4 bytes)

# TensorFlow's DataType enum values (tensorflow/core/framework/types.proto) we can read.
TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 19: np.float16}


class CheckpointFormatError(ValueError):
    """The file is not a TensorFlow tensor bundle this reader understands."""


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor's bytes are: the fields of ``BundleEntryProto`` we use."""

    dtype: np.dtype
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int


# -- protocol buffers ------------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint (7 bits a byte, low bits first, high bit = "more follows")."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointFormatError("truncated varint")
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """``(field number, value)`` for each field of a serialised protobuf message.

    Each field starts with a varint key ``field_number << 3 | wire_type``; the value is a
    varint (type 0), 8 bytes (type 1), length-prefixed bytes (type 2) or 4 bytes (type 5).
    Fixed-width values come back as ints, length-prefixed ones as bytes.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(buf, pos)
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire_type}")
        yield number, value


def _bundle_entry(name: str, buf: bytes) -> BundleEntry:
    """Decode ``BundleEntryProto``: dtype (1), shape (2: ``TensorShapeProto``, whose field 2
    is a repeated ``Dim`` with the size in field 1), shard_id (3), offset (4), size (5)."""
    fields: dict[int, int | bytes] = {}
    dims: list[int] = []
    for number, value in _proto_fields(buf):
        if number == 2:
            dims = [
                dict(_proto_fields(dim)).get(1, 0)
                for field, dim in _proto_fields(value) if field == 2
            ]
        elif number == 7:
            raise CheckpointFormatError(f"tensor {name!r} is stored in slices, not supported")
        else:
            fields[number] = value
    dtype_code = fields.get(1, 0)
    if dtype_code not in TF_DTYPES:
        raise CheckpointFormatError(f"tensor {name!r} has TensorFlow dtype {dtype_code}; "
                                    f"readable: {sorted(TF_DTYPES)}")
    return BundleEntry(
        dtype=np.dtype(TF_DTYPES[dtype_code]).newbyteorder("<"),
        shape=tuple(dims),
        shard_id=fields.get(3, 0),
        offset=fields.get(4, 0),
        size=fields.get(5, 0),
    )


# -- SSTable ---------------------------------------------------------------------------------
def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum LevelDB and TensorFlow use."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    """LevelDB stores ``rotate_right(crc, 15) + 0xa282ead8`` so that a CRC of data that itself
    holds CRCs is not degenerate; undo that."""
    rotated = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def _block_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    """``(offset, size, position after)`` of a BlockHandle: two varints."""
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_block(table: bytes, offset: int, size: int, path: Path) -> bytes:
    """The contents of the block at ``offset``, after checking its trailer."""
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(table):
        raise CheckpointFormatError(f"{path}: block at byte {offset} runs past the end")
    block, compression = table[offset:end], table[end]
    if compression != 0:
        raise CheckpointFormatError(f"{path}: block at byte {offset} is compressed "
                                    f"(type {compression}); only uncompressed tables are read")
    (stored,) = struct.unpack_from("<I", table, end + 1)
    if crc32c(table[offset : end + 1]) != _unmask(stored):
        raise CheckpointFormatError(f"{path}: checksum mismatch in the block at byte {offset}; "
                                    "the file is corrupt")
    return block


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` pairs of a block, undoing the prefix compression of the keys."""
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    entries_end = len(block) - 4 * (num_restarts + 1)
    pos, key = 0, b""
    while pos < entries_end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_length]
        pos += value_length


def read_sstable(path: str | Path) -> Iterator[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of a LevelDB-format table file, in key order."""
    path = Path(path)
    table = path.read_bytes()
    if len(table) < FOOTER_SIZE:
        raise CheckpointFormatError(f"{path} is too short to be a table file")
    footer = table[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise CheckpointFormatError(f"{path} is not a TensorFlow checkpoint index "
                                    "(no table magic number at its end)")
    _, _, pos = _block_handle(footer)  # the metaindex block: nothing we need
    index_offset, index_size, _ = _block_handle(footer, pos)
    index = _read_block(table, index_offset, index_size, path)
    for _, handle in _block_entries(index):
        offset, size, _ = _block_handle(handle)
        yield from _block_entries(_read_block(table, offset, size, path))


# -- the checkpoint ----------------------------------------------------------------------------
def checkpoint_prefix(path: str | Path) -> Path:
    """The prefix (``DIR/model.ckpt``) for a prefix, an ``.index`` file, or a directory.

    A directory's ``checkpoint`` file names its latest prefix (``model_checkpoint_path:
    "model.ckpt"``); without one the directory must hold a single ``*.index`` file.
    """
    path = Path(path)
    if path.suffix == ".index":
        return path.with_suffix("")
    if not path.is_dir():
        return path
    state = path / "checkpoint"
    if state.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(), re.MULTILINE)
        if match:
            return path / match.group(1)  # an absolute path stays absolute
    indexes = sorted(path.glob("*.index"))
    if len(indexes) != 1:
        raise FileNotFoundError(f"{path}: expected a 'checkpoint' file or exactly one *.index "
                                f"file, found {len(indexes)} *.index files")
    return indexes[0].with_suffix("")


class TFCheckpoint:
    """The tensors of a TensorFlow checkpoint, read one at a time on request.

    >>> ckpt = TFCheckpoint("models/124M")         # or ".../model.ckpt"
    >>> ckpt.entries["model/wte"].shape
    (50257, 768)
    >>> wte = ckpt.read("model/wte")                # a float32 numpy array
    """

    def __init__(self, path: str | Path) -> None:
        self.prefix = checkpoint_prefix(path)
        index = self.prefix.with_name(self.prefix.name + ".index")
        if not index.is_file():
            raise FileNotFoundError(f"{index} does not exist: not a TensorFlow checkpoint")
        self.entries: dict[str, BundleEntry] = {}
        num_shards = 1
        for key, value in read_sstable(index):
            if key == b"":  # BundleHeaderProto: num_shards (1), endianness (2: 0 = little)
                header = dict(_proto_fields(value))
                num_shards = header.get(1, 1)
                if header.get(2, 0) != 0:
                    raise CheckpointFormatError(f"{index}: big-endian checkpoints are not read")
            else:
                name = key.decode("utf-8")
                self.entries[name] = _bundle_entry(name, value)
        stem = self.prefix.name
        self._shards = [self.prefix.with_name(f"{stem}.data-{i:05d}-of-{num_shards:05d}")
                        for i in range(num_shards)]
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Each entry's byte count matches its shape and lies inside its data file."""
        shard_sizes = {}
        for shard in {e.shard_id for e in self.entries.values()}:
            path = self._shards[shard]
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist: the checkpoint is incomplete")
            shard_sizes[shard] = path.stat().st_size
        for name, entry in self.entries.items():
            expected = int(np.prod(entry.shape, dtype=np.int64)) * entry.dtype.itemsize
            if entry.size != expected:
                raise CheckpointFormatError(f"tensor {name!r}: {entry.size} bytes stored for "
                                            f"shape {entry.shape} of {entry.dtype}")
            if entry.offset + entry.size > shard_sizes[entry.shard_id]:
                raise CheckpointFormatError(
                    f"tensor {name!r} ends at byte {entry.offset + entry.size} but "
                    f"{self._shards[entry.shard_id]} has {shard_sizes[entry.shard_id]} bytes; "
                    "the file is truncated"
                )

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a new numpy array (read from disk, not memory-mapped)."""
        if name not in self.entries:
            raise KeyError(f"{self.prefix}: no tensor {name!r}")
        entry = self.entries[name]
        count = entry.size // entry.dtype.itemsize
        array = np.fromfile(self._shards[entry.shard_id], entry.dtype, count, offset=entry.offset)
        return array.reshape(entry.shape)


def read_tf_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint, by name (``TFCheckpoint`` reads them one at a time)."""
    checkpoint = TFCheckpoint(path)
    return {name: checkpoint.read(name) for name in checkpoint.entries}
