"""Test helper: read the history rows back out of offline W&B run files (``wandb/offline-run-*/run-*.wandb``).

wandb 0.31 ships no Python reader, so this implements the file format, as checked against files wandb 0.31 writes:
- a 7-byte header: ident ``:W&B``, magic 0xBEE1 (2 bytes, little endian), version 0 (1 byte);
- then LevelDB log-format records in 32 KiB blocks counted from the start of the file (the header sits in block 0);
  each chunk has a 7-byte header: checksum (4 bytes), payload length (2 bytes), type (1 byte: FULL=1, FIRST=2,
  MIDDLE=3, LAST=4); a block tail shorter than 7 bytes is zero padding. The checksum is plain zlib CRC-32 of the
  type byte and the payload (wandb's variant: not LevelDB's masked CRC-32C);
- each whole record is a ``wandb.proto.wandb_internal_pb2.Record``; a history row is a record with ``history`` set,
  whose items carry ``key`` or ``nested_key`` (0.31 writes ``nested_key``) and ``value_json``.
A torn tail (a process killed mid-write) ends the read; any other damage is an error naming the file and offset.
TEST-ONLY: the product never reads wandb's private files (loop/tracking.py resumes with wandb's public API and its own
record); the tests use this reader because ``wandb.Api`` cannot read offline runs.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version
IDENT, MAGIC, VERSION = b":W&B", 0xBEE1, 0
CHUNK_HEADER = struct.Struct("<IHB")  # checksum, length, type
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[bytes]:
    """The payload of every whole record in the file, in order."""
    data = Path(path).read_bytes()
    if data[:FILE_HEADER.size] != FILE_HEADER.pack(IDENT, MAGIC, VERSION):
        raise ValueError(f"{path}: not a W&B run file (header {data[:FILE_HEADER.size]!r})")
    records: list[bytes] = []
    pending: list[bytes] | None = None  # chunks of a record split across blocks
    offset = FILE_HEADER.size
    while offset + CHUNK_HEADER.size <= len(data):
        block_left = BLOCK_SIZE - offset % BLOCK_SIZE
        if block_left < CHUNK_HEADER.size:  # zero padding up to the next block
            offset += block_left
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, offset)
        start = offset + CHUNK_HEADER.size
        payload = data[start:start + length]
        if len(payload) < length:
            break  # torn tail
        if checksum != zlib.crc32(bytes([kind]) + payload):
            raise ValueError(f"{path}: bad checksum in the record chunk at byte {offset}")
        offset = start + length
        if kind == FULL:
            records.append(payload)
        elif kind == FIRST:
            pending = [payload]
        elif kind in (MIDDLE, LAST) and pending is not None:
            pending.append(payload)
            if kind == LAST:
                records.append(b"".join(pending))
                pending = None
        else:
            raise ValueError(f"{path}: unexpected chunk type {kind} at byte {offset - length - CHUNK_HEADER.size}")
    return records


def history_rows(path: str | Path) -> list[dict[str, Any]]:
    """The history rows logged into one ``.wandb`` file, each a dict: W&B key -> decoded JSON value.

    A nested key becomes nested dicts: a logged table is ``row["samples/completions"] == {"_type": "table-file", ...}``.
    """
    from wandb.proto import wandb_internal_pb2

    rows = []
    for payload in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            *parents, name = [item.key] if item.key else item.nested_key  # 0.31 writes nested_key, even for one name
            place = row
            for parent in parents:
                place = place.setdefault(parent, {})
            place[name] = json.loads(item.value_json)
        rows.append(row)
    return rows


def offline_history(directory: str | Path) -> list[dict[str, Any]]:
    """Every history row of every offline run under ``directory`` (searched recursively), runs in name order."""
    files = sorted(Path(directory).rglob("offline-run-*/run-*.wandb"))
    return [row for path in files for row in history_rows(path)]


def run_info(path: str | Path) -> dict[str, Any]:
    """The run record of one ``.wandb`` file: id, name, group, job type, tags, whether resumed, and the config."""
    from wandb.proto import wandb_internal_pb2

    for payload in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "run":
            run = record.run
            config = {item.key: json.loads(item.value_json) for item in run.config.update}
            return {"id": run.run_id, "name": run.display_name, "group": run.run_group, "job_type": run.job_type,
                    "tags": list(run.tags), "config": config}
    raise ValueError(f"{path}: no run record")
