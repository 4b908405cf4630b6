"""The sample batch blob of either schema: write the one a device is configured for, read both.

The blob's first byte is its schema (1: records, engine/ride/samples.py; 2: columns,
engine/ride/compact.py), so one document may hold batches of both (a device upgraded mid-ride) and every
reader decodes each batch by its own byte; the document header's `schema` stays the document layout's
version. Migration: docs/architecture.md#sample-batch-schemas.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.ride import compact, samples
from engine.ride.samples import Sample, SampleDecodeError

BATCH_SCHEMAS = (samples.BLOB_VERSION, compact.BATCH_VERSION)
DEFAULT_BATCH_SCHEMA = compact.BATCH_VERSION


def check_batch_schema(value: int) -> int:
    if value not in BATCH_SCHEMAS:
        raise ValueError(f"unknown sample batch schema {value!r}; known: {BATCH_SCHEMAS}")
    return value


def encode_batch(items: Sequence[Sample], batch_schema: int = DEFAULT_BATCH_SCHEMA) -> bytes:
    """One batch blob (samples sorted by seq, no duplicates) in `batch_schema`."""
    if check_batch_schema(batch_schema) == compact.BATCH_VERSION:
        return compact.encode_batch(items)
    return samples.encode_blob(items)


def decode_batch(data: bytes) -> list[Sample]:
    """The samples of a blob of either schema; SampleDecodeError (or its CompactDecodeError) otherwise."""
    if data[:1] == bytes([compact.BATCH_VERSION]):
        return compact.decode_batch(data)
    if data[:1] == bytes([samples.BLOB_VERSION]):
        return samples.decode_blob(data)
    raise SampleDecodeError(f"unknown sample batch schema {data[:1].hex() or '(empty)'}")
