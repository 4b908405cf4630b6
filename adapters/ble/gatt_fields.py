"""Reading and writing the little-endian fields of GATT characteristic values, sans-I/O.

The fitness profiles (Indoor Bike Data, Cycling Power Measurement, CSC Measurement) share one shape: a
flags field, then fields in a fixed order, each present or not according to a flag bit. `FieldReader`
walks such a value and turns every shortfall into the profile's own `FitnessPayloadError` subclass naming
the field; `FieldWriter` builds one, refusing values that do not fit their field rather than wrapping
them silently.
"""

from __future__ import annotations


def uuid16(short: int) -> str:
    """The full 128-bit form of a Bluetooth SIG 16-bit UUID, as bleak and bumble spell it."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


class FitnessPayloadError(ValueError):
    """A payload that is not a valid value of a fitness-machine characteristic.

    `field` names what was missing or inconsistent ("flags", a field name, or "length" for trailing
    bytes); `payload` is the offending bytes, kept for reports. Each profile raises its own subclass
    (`FtmsError`, `CpsError`, `CscError`), so `except FitnessPayloadError` catches all three.
    """

    profile = "fitness"

    def __init__(self, field: str, message: str, payload: bytes) -> None:
        super().__init__(f"{field}: {message} (payload {payload.hex(' ') or 'empty'})")
        self.field = field
        self.payload = bytes(payload)


class FieldReader:
    """Reads fields in order from one characteristic value; every failure is `error(field, ...)`."""

    def __init__(self, data: bytes, error: type[FitnessPayloadError]) -> None:
        self.data = bytes(data)
        self.pos = 0
        self._error = error

    def fail(self, field: str, message: str) -> FitnessPayloadError:
        return self._error(field, message, self.data)

    def flags(self, size: int, *, reserved_mask: int) -> int:
        """The flags field. Reserved bits are an error: these profiles say a server shall send them as
        0, and a value with one set may carry fields this parser does not know, so its layout is unknown.
        """
        if len(self.data) < size:
            raise self.fail("flags", f"expected {size} flag bytes, got {len(self.data)}")
        value = self.uint("flags", size)
        if value & reserved_mask:
            raise self.fail("flags", f"reserved bits set (0x{value & reserved_mask:0{size * 2}x})")
        return value

    def _take(self, field: str, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            left = len(self.data) - self.pos
            raise self.fail(field, f"flagged present but {left} of its {size} bytes follow")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def uint(self, field: str, size: int) -> int:
        return int.from_bytes(self._take(field, size), "little")

    def sint(self, field: str, size: int) -> int:
        return int.from_bytes(self._take(field, size), "little", signed=True)

    def end(self) -> None:
        """No trailing bytes: each of these values is exactly its flagged fields, nothing more."""
        left = len(self.data) - self.pos
        if left:
            raise self.fail("length", f"{left} unexpected trailing bytes after the flagged fields")


class FieldWriter:
    """Builds one characteristic value; a value that does not fit its field is a ValueError."""

    def __init__(self) -> None:
        self._out = bytearray()

    def uint(self, field: str, value: int, size: int) -> None:
        top = (1 << (8 * size)) - 1
        if not 0 <= value <= top:
            raise ValueError(f"{field} {value} out of range 0..{top}")
        self._out += value.to_bytes(size, "little")

    def sint(self, field: str, value: int, size: int) -> None:
        half = 1 << (8 * size - 1)
        if not -half <= value < half:
            raise ValueError(f"{field} {value} out of range {-half}..{half - 1}")
        self._out += value.to_bytes(size, "little", signed=True)

    def value(self, flags: int, flags_size: int) -> bytes:
        """The flags, then the fields written so far."""
        return flags.to_bytes(flags_size, "little") + bytes(self._out)
