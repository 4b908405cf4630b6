"""Connection slots per Bluetooth adapter.

Adapters hold only a handful of LE connections (CSR dongles 5, Broadcom 7); past that, BlueZ fails in
confusing ways (devices vanish from the bus, connects time out). So every strap reserves a slot for as
long as its source runs, and the one that does not fit gets a clear, typed error up front.
"""

from __future__ import annotations

from types import TracebackType

DEFAULT_SLOTS = 7


class ConnectionBudgetExceeded(RuntimeError):
    def __init__(self, adapter: str, slots: int, holders: tuple[str, ...], requester: str) -> None:
        super().__init__(
            f"adapter {adapter} has {slots} connection slot(s), {len(holders)} in use"
            f"{' (' + ', '.join(holders) + ')' if holders else ''}; cannot connect {requester}. "
            f"Use another adapter or fewer straps "
            f"(CSR adapters hold 5 connections, Broadcom 7)."
        )
        self.adapter = adapter
        self.slots = slots
        self.holders = holders
        self.requester = requester


class Reservation:
    def __init__(self, budget: ConnectionBudget, holder: str) -> None:
        self._budget = budget
        self.holder = holder

    def release(self) -> None:
        self._budget._release(self.holder)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class ConnectionBudget:
    def __init__(self, adapter: str = "default", slots: int = DEFAULT_SLOTS) -> None:
        if slots < 1:
            raise ValueError(f"an adapter needs at least one connection slot, got {slots}")
        self.adapter = adapter
        self.slots = slots
        self._holders: list[str] = []

    @property
    def holders(self) -> tuple[str, ...]:
        return tuple(self._holders)

    @property
    def available(self) -> int:
        return self.slots - len(self._holders)

    def check(self, count: int, requester: str) -> None:
        """Raise now if `count` more straps would not fit (the factory's up-front check)."""
        if count > self.available:
            raise ConnectionBudgetExceeded(self.adapter, self.slots, self.holders, requester)

    def reserve(self, holder: str) -> Reservation:
        if holder in self._holders:
            raise ValueError(f"{holder} already holds a slot on adapter {self.adapter}")
        if not self.available:
            raise ConnectionBudgetExceeded(self.adapter, self.slots, self.holders, holder)
        self._holders.append(holder)
        return Reservation(self, holder)

    def _release(self, holder: str) -> None:
        if holder in self._holders:
            self._holders.remove(holder)


_ADAPTERS: dict[str, ConnectionBudget] = {}


def adapter_budget(adapter: str, slots: int = DEFAULT_SLOTS) -> ConnectionBudget:
    """The process-wide budget of a real adapter (its slots are shared by everything in the process)."""
    budget = _ADAPTERS.get(adapter)
    if budget is None:
        budget = _ADAPTERS[adapter] = ConnectionBudget(adapter, slots)
    return budget
