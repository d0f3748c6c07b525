"""Reading back what an offline W&B run holds: the records of a ``run-<id>.wandb`` file and the metrics in them.

The file (wandb 0.31, wandb-core) is a 7-byte header then a LevelDB-style log of serialized
``wandb_internal_pb2.Record`` protobufs. ``loop.tracking`` uses it on resume, so that a W&B run gets each metric once.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

WANDB_FILE_HEADER = b":W&B\xe1\xbe\x00"
"""First bytes of a ``run-<id>.wandb`` file: ident ":W&B", magic 0xBEE1 (little endian), version 0."""

LOG_BLOCK_SIZE = 32 * 1024
"""The file is a LevelDB log: chunks never cross these blocks (counted from byte 0, header included)."""

LOG_CHUNK = struct.Struct("<IHB")
"""Chunk header: CRC-32 (zlib's, of type byte + payload), payload length, type (1 full, 2 first, 3 middle, 4 last)."""

MetricKey = tuple[int | None, int | None, str]
"""(round, rl_step, W&B key) of one logged metric; rl_step is None for a completions table."""


def wandb_file_records(path: str | Path) -> Iterator[bytes]:
    """The whole records of a ``run-<id>.wandb`` file, each a serialized ``wandb_internal_pb2.Record``.

    A chunk cut short at the end of the file (a killed writer) ends the records; any other damage is a ValueError.
    """
    data = Path(path).read_bytes()
    if not data.startswith(WANDB_FILE_HEADER):
        raise ValueError(f"{path}: not a version-0 W&B run file")
    offset, parts = len(WANDB_FILE_HEADER), []  # parts: the chunks of a record split across blocks
    while offset + LOG_CHUNK.size <= len(data):
        block_left = LOG_BLOCK_SIZE - offset % LOG_BLOCK_SIZE
        if block_left < LOG_CHUNK.size:  # zero padding up to the next block
            offset += block_left
            continue
        checksum, length, kind = LOG_CHUNK.unpack_from(data, offset)
        start, end = offset + LOG_CHUNK.size, offset + LOG_CHUNK.size + length
        if end > len(data):
            return  # torn tail
        if checksum != zlib.crc32(data[start - 1:end]) or kind not in (1, 2, 3, 4) or (kind > 2 and not parts):
            raise ValueError(f"{path}: damaged record at byte {offset}")
        parts = [data[start:end]] if kind in (1, 2) else [*parts, data[start:end]]
        offset = end
        if kind in (1, 4):
            yield b"".join(parts)
            parts = []


def logged_metrics(path: str | Path) -> set[MetricKey]:
    """``(round, rl_step, W&B key)`` of every metric in the history rows of one ``run-<id>.wandb`` file.

    ``rl_step`` is None for a row without one (completion tables); W&B's own columns (``_step``...) are left out.
    """
    from wandb.proto import wandb_internal_pb2

    held = set()
    for payload in wandb_file_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") != "history":
            continue
        keys = {item.nested_key[0] if item.nested_key else item.key: item for item in record.history.item}
        steps = [json.loads(keys[name].value_json) if name in keys else None for name in ("round", "rl_step")]
        held.update((*steps, key) for key in keys if key not in ("round", "rl_step") and not key.startswith("_"))
    return held
