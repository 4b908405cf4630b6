"""One object for the common case: bytes of a bus (or a capture of both lines) in, every event out."""

from __future__ import annotations

from adapters.serial.peloton.calibration import CalibrationTable
from adapters.serial.peloton.decoder import BusDecoder, DecoderEvent
from adapters.serial.peloton.framer import FramerEvent, PelotonFramer, ReplyFrame, RequestFrame

PelotonEvent = FramerEvent | DecoderEvent


class PelotonParser:
    """Framer + decoder. `feed` returns frame events followed, per reply, by what it decoded to."""

    def __init__(self, calibration: CalibrationTable | None = None) -> None:
        self.framer = PelotonFramer()
        self.decoder = BusDecoder(calibration)

    def feed(self, data: bytes | bytearray | memoryview) -> list[PelotonEvent]:
        return self._decode(self.framer.feed(data))

    def flush(self) -> list[PelotonEvent]:
        return self._decode(self.framer.flush())

    def _decode(self, events: list[FramerEvent]) -> list[PelotonEvent]:
        out: list[PelotonEvent] = []
        for ev in events:
            out.append(ev)
            if isinstance(ev, RequestFrame | ReplyFrame):
                out.extend(self.decoder.on_frame(ev))
        return out

    def summary(self) -> dict[str, int]:
        return {**self.framer.counters.as_dict(), **self.decoder.counters.as_dict()}
