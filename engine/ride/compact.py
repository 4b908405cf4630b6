"""Sample batch schema 2: a batch blob encoded column by column (sans-I/O: bytes in, samples out).

Schema 1 (engine/ride/samples.py) packs each sample as its own record, so every sample pays for its flags,
its seq and its full values. At 1 Hz neighbouring samples differ little, so schema 2 stores each field as
one column and each column as changes from the previous sample:

    version  u8 = 2
    flags    u8        bit0: the body is raw deflate, bit1: raw LZMA2 (64 KiB dictionary); either way
                       uvarint body length, then the stream. At most one of them; other bits zero
    body:
      n        uvarint   samples in the batch (1..MAX_BATCH_SAMPLES)
      seq      uvarint first seq, then runs of (uvarint delta >= 1, uvarint length) covering n - 1 steps
      t        zigzag first time (centiseconds), then runs of (zigzag delta, length) covering n - 1 steps:
               a steady 1 Hz batch is one run, however long
      contact  runs of (code 0..3, length) covering n: none, detected, not detected, unsupported
      marks    runs of (bit0 stale | bit1 gap, length) covering n
      hr, cadence, power (dW), resistance: each a sequence of runs covering n, a run header being
               uvarint (length << 1 | present). An absent run is `length` samples without the metric (an
               explicit "no value" run); a present run is followed by `length` zigzag deltas, each from
               the metric's previous present value (0 before the first)
      rr count runs of (count 0..MAX_RR, length) covering n, then every interval of the batch as a zigzag
               delta from the previous interval (0 before the first)

A run's length is at least 1 and neighbouring runs of one column differ in value (or in presence), so each
batch has exactly one body: decoding and encoding again gives the same bytes.

Which form the encoder writes: a body under `RAW_BELOW_BODY_BYTES` (1 KiB, ~3 minutes of the benchmark ride)
is stored raw, a larger one raw, deflated or LZMA2-compressed, whichever is shortest. A blob is never seen
alone: the document's save() deflates its value column across every batch of the ride, and the sync
WebSocket's permessage-deflate keeps its window across messages, so small raw bodies (similar from one
10 s fold to the next) compress together there, while a blob compressed on its own is opaque to both. On
`ridesync bench store`'s ride, an hour folded every 10 s saves at ~18.8 KB with raw batches against
~22.8 KB compressed one by one (20.9 KB against 28.0 KB on the simulated bike's ride). Where raw stops
paying depends on the data: between ~1.3 KB and ~2 KB of body on those two rides; the device's folds sit
far from it on either side (~85 B every 10 s with a link, tens of KB for an offline hour). A large
offline backlog is one big batch, where LZMA2 wins (~15 % smaller than deflate, and ~17 % smaller saved
than the same hour raw). Encoding a small batch also skips two compressors it would not have used.

Decoding is strict: truncated or trailing bytes, overlong varints, unknown bits, runs that do not add up,
values out of range, seqs not strictly increasing, or a compressed stream that does not decompress to
exactly the announced length raise `CompactDecodeError`, never a half-batch. Nothing is
allocated from a count before it is checked against the batch's bounds, and a compressed body is inflated
only up to the length it announces (itself bounded), with a fixed small LZMA2 dictionary.

Samples read back exactly as schema 1 reads them (`Sample.normalized()`), so the resolved view, series and
totals do not depend on which schema wrote a batch.
"""

from __future__ import annotations

import itertools
import lzma
import zlib
from collections.abc import Callable, Iterable, Sequence

from engine.ride.samples import (
    _CONTACTS,
    MAX_RR,
    MAX_SEQ,
    Sample,
    SampleDecodeError,
    _put_uvarint,
    _Reader,
    _unzigzag,
    _validate,
    _zigzag,
)

BATCH_VERSION = 2
MAX_BATCH_SAMPLES = 1 << 16  # 18 h at 1 Hz: more than one fold ever writes into one key
# The deflated body may announce at most this (a generous bound on what MAX_BATCH_SAMPLES can need),
# so a deflate bomb is refused before it is inflated.
MAX_BODY_BYTES = 8 * 1024 * 1024
_FLAG_DEFLATED = 0x01
_FLAG_LZMA = 0x02
# Raw LZMA2 with a fixed, small dictionary: a batch body is tens of KB, and the decoder's memory is the
# dictionary, whatever a hostile blob says. lc=1, lp=0, pb=0: the body is a byte stream of varints with no
# 2- or 4-byte alignment, and one bit of literal context is enough (~2.5 % smaller than the defaults on
# both benchmark rides); the decoder reads these from the stream, the encoder alone chooses them.
# Below this, a body is stored raw (see the module docstring: the save and the wire compress small bodies
# across batches better than each batch alone).
RAW_BELOW_BODY_BYTES = 1024
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 16, "lc": 1, "lp": 0, "pb": 0}]
_METRIC_MAX = {"hr": 0xFFFF, "cadence": 0xFFFFFFFF, "power_dw": 0xFFFFFFFF, "resistance": 0xFFFFFFFF}


class CompactDecodeError(SampleDecodeError):
    """Bytes that are not a valid schema 2 sample batch (a SampleDecodeError, so readers of either schema
    catch one type)."""


# -- encoding ------------------------------------------------------------------------------------------


def _put_runs(out: bytearray, values: Sequence[int], code: Callable[[int], int] = lambda v: v) -> None:
    """Maximal runs of equal values as (code(value), length) pairs."""
    i = 0
    while i < len(values):
        j = i + 1
        while j < len(values) and values[j] == values[i]:
            j += 1
        _put_uvarint(out, code(values[i]))
        _put_uvarint(out, j - i)
        i = j


def _put_metric(out: bytearray, values: Sequence[int | None]) -> None:
    previous = 0
    i = 0
    while i < len(values):
        present = values[i] is not None
        j = i + 1
        while j < len(values) and (values[j] is not None) == present:
            j += 1
        _put_uvarint(out, (j - i) << 1 | present)
        if present:
            for value in values[i:j]:
                assert value is not None
                _put_uvarint(out, _zigzag(value - previous))
                previous = value
        i = j


def encode_body(items: Sequence[Sample]) -> bytes:
    """The uncompressed body of a batch (samples sorted by strictly increasing seq)."""
    out = bytearray()
    _put_uvarint(out, len(items))
    seqs = [s.seq for s in items]
    times = [s.t_cs for s in items]
    _put_uvarint(out, seqs[0])
    _put_runs(out, [b - a for a, b in itertools.pairwise(seqs)])
    _put_uvarint(out, _zigzag(times[0]))
    _put_runs(out, [b - a for a, b in itertools.pairwise(times)], _zigzag)
    _put_runs(out, [_CONTACTS.index(s.contact) for s in items])
    _put_runs(out, [int(s.stale) | int(s.gap) << 1 for s in items])
    for name in _METRIC_MAX:
        _put_metric(out, [getattr(s, name) for s in items])
    _put_runs(out, [len(s.rr) for s in items])
    previous = 0
    for sample in items:
        for value in sample.rr:
            _put_uvarint(out, _zigzag(value - previous))
            previous = value
    return bytes(out)


def encode_batch(samples: Iterable[Sample]) -> bytes:
    """A schema 2 batch blob. Samples must have strictly increasing seqs (documents.add_samples sorts);
    values out of range raise ValueError, as in schema 1."""
    items = list(samples)
    if not 1 <= len(items) <= MAX_BATCH_SAMPLES:
        raise ValueError(f"a batch holds 1..{MAX_BATCH_SAMPLES} samples, not {len(items)}")
    for sample in items:
        _validate(sample)
    if any(b.seq <= a.seq for a, b in itertools.pairwise(items)):
        raise ValueError("a schema 2 batch needs strictly increasing seqs")
    body = encode_body(items)
    raw = bytes([BATCH_VERSION, 0]) + body
    # Compressed only within what the decoder accepts.
    if not RAW_BELOW_BODY_BYTES <= len(body) <= MAX_BODY_BYTES:
        return raw
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = _compressed(_FLAG_DEFLATED, body, packer.compress(body) + packer.flush())
    packed = _compressed(_FLAG_LZMA, body, lzma.compress(body, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS))
    return min((raw, deflated, packed), key=len)


def _compressed(flag: int, body: bytes, stream: bytes) -> bytes:
    out = bytearray([BATCH_VERSION, flag])
    _put_uvarint(out, len(body))
    return bytes(out + stream)


# -- decoding ------------------------------------------------------------------------------------------


def _runs(reader: _Reader, total: int, limit: int, what: str) -> list[tuple[int, int]]:
    """Runs of (value <= limit, length >= 1) adding up to exactly `total`; neighbours must differ."""
    runs: list[tuple[int, int]] = []
    covered = 0
    while covered < total:
        value, length = reader.uvarint(), reader.uvarint()
        if value > limit:
            raise CompactDecodeError(f"{what}: value {value} out of range")
        if length < 1 or length > total - covered:
            raise CompactDecodeError(f"{what}: run of {length} does not fit {total - covered} left")
        if runs and runs[-1][0] == value:
            raise CompactDecodeError(f"{what}: neighbouring runs repeat a value (non-canonical)")
        runs.append((value, length))
        covered += length
    return runs


def _expand(runs: list[tuple[int, int]]) -> list[int]:
    out: list[int] = []
    for value, length in runs:
        out.extend([value] * length)
    return out


def _metric(reader: _Reader, n: int, name: str) -> list[int | None]:
    out: list[int | None] = []
    previous = 0
    last_present: bool | None = None
    top = _METRIC_MAX[name]
    while len(out) < n:
        header = reader.uvarint()
        length, present = header >> 1, bool(header & 1)
        if length < 1 or length > n - len(out):
            raise CompactDecodeError(f"{name}: run of {length} does not fit {n - len(out)} left")
        if present == last_present:
            raise CompactDecodeError(f"{name}: neighbouring runs of one kind (non-canonical)")
        last_present = present
        if not present:
            out.extend([None] * length)
            continue
        values = _deltas(reader, length, previous, top, name)
        out.extend(values)
        previous = values[-1]
    return out


def _deltas(reader: _Reader, count: int, previous: int, top: int, what: str) -> list[int]:
    """`count` zigzag deltas, each added to the value before it (starting from `previous`), each value
    within 0..top. The hot loop of decoding (four of five body bytes are deltas): the one-byte varint is
    read inline, the rest through the reader's strict uvarint."""
    data, uvarint = reader.data, reader.uvarint
    end = len(data)
    values: list[int] = []
    append = values.append
    for _ in range(count):
        pos = reader.pos
        if pos < end and data[pos] < 0x80:
            code = data[pos]
            reader.pos = pos + 1
        else:
            code = uvarint()
        previous += code >> 1 if not code & 1 else -((code + 1) >> 1)
        if not 0 <= previous <= top:
            raise CompactDecodeError(f"{what}: value {previous} out of range")
        append(previous)
    return values


def _body(data: bytes) -> bytes:
    reader = _Reader(data, error=CompactDecodeError)
    version = reader.u8()
    if version != BATCH_VERSION:
        raise CompactDecodeError(f"not a schema 2 batch: version {version}")
    flags = reader.u8()
    if flags not in (0, _FLAG_DEFLATED, _FLAG_LZMA):
        raise CompactDecodeError(f"unknown batch flags {flags:#04x}")
    if not flags:
        return data[reader.pos :]
    size = reader.uvarint()
    if not 1 <= size <= MAX_BODY_BYTES:
        raise CompactDecodeError(f"compressed body announces {size} bytes")
    unpacker: zlib._Decompress | lzma.LZMADecompressor
    if flags == _FLAG_DEFLATED:
        unpacker = zlib.decompressobj(-15)
    else:
        unpacker = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    try:
        body = unpacker.decompress(data[reader.pos :], size)
    except (zlib.error, lzma.LZMAError) as exc:
        raise CompactDecodeError(f"compressed body does not decompress: {exc}") from None
    # The stream must end exactly where the blob does, having produced exactly `size` bytes.
    if len(body) != size or not unpacker.eof or unpacker.unused_data:
        raise CompactDecodeError("compressed body does not decompress to exactly its announced length")
    return body


def decode_batch(data: bytes) -> list[Sample]:
    """The samples of a schema 2 batch blob, or CompactDecodeError."""
    body = _body(bytes(data))
    reader = _Reader(body, error=CompactDecodeError)
    n = reader.uvarint()
    if not 1 <= n <= MAX_BATCH_SAMPLES:
        raise CompactDecodeError(f"batch of {n} samples")
    seq = reader.uvarint()
    seqs = [seq]
    for delta in _expand(_runs(reader, n - 1, MAX_SEQ, "seq")):
        if delta < 1:
            raise CompactDecodeError("seqs must strictly increase")
        seq += delta
        seqs.append(seq)
    if seq > MAX_SEQ:
        raise CompactDecodeError(f"seq out of range: {seq}")
    t_cs = _unzigzag(reader.uvarint())
    times = [t_cs]
    for code in _expand(_runs(reader, n - 1, 1 << 64, "t")):
        t_cs += _unzigzag(code)
        times.append(t_cs)
    contacts = _expand(_runs(reader, n, len(_CONTACTS) - 1, "contact"))
    marks = _expand(_runs(reader, n, 3, "marks"))
    metrics = {name: _metric(reader, n, name) for name in _METRIC_MAX}
    counts = _expand(_runs(reader, n, MAX_RR, "rr count"))
    rr: list[tuple[int, ...]] = []
    previous = 0
    for count in counts:
        if not count:
            rr.append(())
            continue
        values = _deltas(reader, count, previous, 0xFFFF, "rr interval")
        previous = values[-1]
        rr.append(tuple(values))
    if reader.pos != len(body):
        raise CompactDecodeError(f"{len(body) - reader.pos} trailing bytes after the batch")
    return [
        Sample(
            seq=seqs[i],
            t=times[i] / 100,
            hr=metrics["hr"][i],
            rr=rr[i],
            cadence=metrics["cadence"][i],
            power_dw=metrics["power_dw"][i],
            resistance=metrics["resistance"][i],
            contact=_CONTACTS[contacts[i]],
            stale=bool(marks[i] & 1),
            gap=bool(marks[i] & 2),
        )
        for i in range(n)
    ]
