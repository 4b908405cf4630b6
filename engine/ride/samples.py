"""The packed binary sample record and the batch blob that carries several of them in a ride document.

One sample is keyed by `(device, seq)`; the device is implied by the document (or the raw-log row) that
holds it. A record is typically 9-11 bytes:

    flags    u8       bit0 hr, bit1 rr, bit2 cadence, bit3 power, bit4 resistance, bit5 stale, bit6 gap,
                      bit7 ext (an extension byte follows)
    ext      u8       only if bit7: bits0-1 contact (0 none, 1 detected, 2 not detected, 3 unsupported),
                      bit2 hr is 16-bit; other bits must be zero
    seq      uvarint
    t        zigzag varint, centiseconds relative to the batch's base time
    hr       u8, or u16 little-endian when ext bit2            (if bit0)
    rr       uvarint count (1..32), then uvarint each, 1/1024 s (if bit1)
    cadence  uvarint rpm                                       (if bit2)
    power    uvarint deciwatts                                 (if bit3)
    resist.  uvarint, the bike's resistance value              (if bit4)

Without the ext byte, a sample with heart rate has contact "detected" and one without has none: the common
case costs nothing. Decoding is strict (no trailing bytes, no overlong varints, no unknown bits), so
hostile bytes raise `SampleDecodeError` and never yield a half-sample.

A batch blob is `version (1) | uvarint base time in centiseconds | record*`; the base makes each record's
time a small number. The measurement that chose this layout over a list of maps is in engine/ride/README.md
and `ridesync bench store`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

BLOB_VERSION = 1
MAX_RR = 32
MAX_SEQ = (1 << 48) - 1
MAX_UVARINT_BYTES = 10
_CONTACTS = (None, "detected", "not_detected", "unsupported")


class SampleDecodeError(ValueError):
    """Bytes that are not a valid sample record or batch blob."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One ride sample. Absent metrics are None; "no contact" is a contact state, never an hr of 0."""

    seq: int
    t: float
    hr: int | None = None
    rr: tuple[int, ...] = ()
    cadence: int | None = None
    power_dw: int | None = None
    resistance: int | None = None
    contact: str | None = None
    stale: bool = False
    gap: bool = False

    @property
    def power_w(self) -> float | None:
        return None if self.power_dw is None else self.power_dw / 10

    @property
    def t_cs(self) -> int:
        return round(self.t * 100)

    def hr_usable(self) -> bool:
        """A heart rate that may be counted: present, with contact (or contact unsupported), not stale."""
        return (
            self.hr is not None
            and self.hr > 0
            and not self.stale
            and not self.gap
            and self.contact in ("detected", "unsupported", None)
        )

    def normalized(self) -> Sample:
        """The sample as it reads back after a round trip (time rounded to centiseconds)."""
        return replace(self, t=self.t_cs / 100)


def _put_uvarint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("uvarint must be non-negative")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


class _Reader:
    """Strict reads from bytes; every failure raises `error` (the codec's own SampleDecodeError type)."""

    __slots__ = ("data", "error", "pos")

    def __init__(self, data: bytes, pos: int = 0, error: type[SampleDecodeError] | None = None) -> None:
        self.data = data
        self.pos = pos
        self.error = SampleDecodeError if error is None else error

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise self.error(f"truncated sample at byte {self.pos}")
        byte = self.data[self.pos]
        self.pos += 1
        return byte

    def uvarint(self) -> int:
        # Fast path: almost every varint of a batch (deltas at 1 Hz, run headers) is one byte, and a
        # 4-hour ride decodes ~200,000 of them per resolve; one byte below 0x80 is never overlong.
        pos = self.pos
        if pos < len(self.data):
            byte = self.data[pos]
            if byte < 0x80:
                self.pos = pos + 1
                return byte
        value = 0
        for i in range(MAX_UVARINT_BYTES):
            byte = self.u8()
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and byte == 0:
                    raise self.error(f"overlong varint at byte {self.pos - 1}")
                return value
        raise self.error(f"varint longer than {MAX_UVARINT_BYTES} bytes")


def _validate(sample: Sample) -> None:
    if not 0 <= sample.seq <= MAX_SEQ:
        raise ValueError(f"seq out of range: {sample.seq}")
    if sample.hr is not None and not 0 <= sample.hr <= 0xFFFF:
        raise ValueError(f"hr out of range: {sample.hr}")
    if len(sample.rr) > MAX_RR or any(not 0 <= v <= 0xFFFF for v in sample.rr):
        raise ValueError("rr intervals out of range")
    for name in ("cadence", "power_dw", "resistance"):
        value = getattr(sample, name)
        if value is not None and not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{name} out of range: {value}")
    if sample.contact not in _CONTACTS:
        raise ValueError(f"unknown contact state {sample.contact!r}")


def encode_record(sample: Sample, base_cs: int, out: bytearray | None = None) -> bytearray:
    """Append one packed record to `out` (a new buffer if None) and return the buffer."""
    _validate(sample)
    buf = bytearray() if out is None else out
    flags = 0
    has_hr = sample.hr is not None
    if has_hr:
        flags |= 0x01
    if sample.rr:
        flags |= 0x02
    if sample.cadence is not None:
        flags |= 0x04
    if sample.power_dw is not None:
        flags |= 0x08
    if sample.resistance is not None:
        flags |= 0x10
    if sample.stale:
        flags |= 0x20
    if sample.gap:
        flags |= 0x40
    default_contact = "detected" if has_hr else None
    hr16 = has_hr and sample.hr is not None and sample.hr > 0xFF
    ext = 0
    if sample.contact != default_contact or hr16:
        ext = _CONTACTS.index(sample.contact) | (0x04 if hr16 else 0)
        flags |= 0x80
    buf.append(flags)
    if flags & 0x80:
        buf.append(ext)
    _put_uvarint(buf, sample.seq)
    _put_uvarint(buf, _zigzag(sample.t_cs - base_cs))
    if sample.hr is not None:
        if hr16:
            buf += sample.hr.to_bytes(2, "little")
        else:
            buf.append(sample.hr)
    if sample.rr:
        _put_uvarint(buf, len(sample.rr))
        for value in sample.rr:
            _put_uvarint(buf, value)
    for metric in (sample.cadence, sample.power_dw, sample.resistance):
        if metric is not None:
            _put_uvarint(buf, metric)
    return buf


def _decode_one(reader: _Reader, base_cs: int) -> Sample:
    flags = reader.u8()
    ext = reader.u8() if flags & 0x80 else None
    if ext is not None and ext & ~0x07:
        raise SampleDecodeError(f"unknown extension bits {ext:#04x}")
    seq = reader.uvarint()
    if seq > MAX_SEQ:
        raise SampleDecodeError(f"seq out of range: {seq}")
    t_cs = base_cs + _unzigzag(reader.uvarint())
    hr: int | None = None
    if flags & 0x01:
        if ext is not None and ext & 0x04:
            hr = reader.u8() | (reader.u8() << 8)
            if hr <= 0xFF:
                raise SampleDecodeError("16-bit heart rate below 256 (non-canonical)")
        else:
            hr = reader.u8()
    elif ext is not None and ext & 0x04:
        raise SampleDecodeError("16-bit heart-rate bit without heart rate")
    rr: tuple[int, ...] = ()
    if flags & 0x02:
        count = reader.uvarint()
        if not 1 <= count <= MAX_RR:
            raise SampleDecodeError(f"rr count out of range: {count}")
        values = tuple(reader.uvarint() for _ in range(count))
        if any(v > 0xFFFF for v in values):
            raise SampleDecodeError("rr interval out of range")
        rr = values
    optional: list[int | None] = []
    for bit in (0x04, 0x08, 0x10):
        if flags & bit:
            value = reader.uvarint()
            if value > 0xFFFFFFFF:
                raise SampleDecodeError("metric out of range")
            optional.append(value)
        else:
            optional.append(None)
    if ext is None:
        contact = "detected" if hr is not None else None
    else:
        contact = _CONTACTS[ext & 0x03]
        if contact == ("detected" if hr is not None else None) and not ext & 0x04:
            raise SampleDecodeError("extension byte carries only the default (non-canonical)")
    return Sample(
        seq=seq,
        t=t_cs / 100,
        hr=hr,
        rr=rr,
        cadence=optional[0],
        power_dw=optional[1],
        resistance=optional[2],
        contact=contact,
        stale=bool(flags & 0x20),
        gap=bool(flags & 0x40),
    )


def decode_record(data: bytes, base_cs: int = 0) -> Sample:
    """Exactly one record, nothing after it."""
    reader = _Reader(bytes(data))
    sample = _decode_one(reader, base_cs)
    if reader.pos != len(reader.data):
        raise SampleDecodeError(f"{len(reader.data) - reader.pos} trailing bytes after sample record")
    return sample


def encode_blob(samples: Iterable[Sample]) -> bytes:
    """A batch blob for a ride document (samples in the given order; the caller sorts by seq)."""
    items = list(samples)
    if not items:
        raise ValueError("a batch blob holds at least one sample")
    base_cs = min(max(s.t_cs, 0) for s in items)
    out = bytearray([BLOB_VERSION])
    _put_uvarint(out, base_cs)
    for sample in items:
        encode_record(sample, base_cs, out)
    return bytes(out)


def decode_blob(data: bytes) -> list[Sample]:
    reader = _Reader(bytes(data))
    version = reader.u8()
    if version != BLOB_VERSION:
        raise SampleDecodeError(f"unknown sample blob version {version}")
    base_cs = reader.uvarint()
    samples = []
    while reader.pos < len(reader.data):
        samples.append(_decode_one(reader, base_cs))
    if not samples:
        raise SampleDecodeError("empty sample blob")
    return samples
