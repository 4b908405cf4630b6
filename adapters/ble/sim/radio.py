"""An in-process virtual radio: bumble's `LocalLink` with a notion of range, and a fixed controller.

Two things bumble 0.0.236's virtual radio lacks are added here, because real straps need them:

* Range. `LocalLink` delivers everything to everyone. `RangeLink` drops advertising PDUs, ACL data and
  LL control PDUs to and from a node that has "walked out of range"; if the node stays away longer than
  the supervision timeout, both ends of each of its connections get a Disconnection Complete with reason
  0x08 (Connection Timeout), as a real link layer reports it. A node that comes back in time keeps its
  connection, as on real hardware.
* LE Create Connection Cancel. bumble's controller acknowledges the cancel but never sends the LE
  Connection Complete (status Unknown Connection Identifier) the spec requires, and keeps the connect
  pending, so a host waiting on `connect(timeout)` to an absent strap hangs and the next connect is
  refused. `SimController` answers it properly.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bumble import hci
from bumble.controller import Controller
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

# Imported for its effect: bumble's timeouts lose no cancellation on Python 3.11 (see the module).
from adapters.ble.sim import cancel_safe  # noqa: F401

log = logging.getLogger(__name__)

# Vol 2, Part D: 0x08 Connection Timeout, what a central sees when a peripheral walks away.
CONNECTION_TIMEOUT_REASON = hci.HCI_CONNECTION_TIMEOUT_ERROR


class SimController(Controller):
    """bumble's virtual controller, answering LE Create Connection Cancel as the spec says."""

    def on_hci_le_create_connection_cancel_command(self, _command: Any) -> Any:
        pending = self.pending_le_connection
        if pending is None:
            # Vol 4, Part E, 7.8.13: cancelling when nothing is pending is Command Disallowed.
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failed = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # The Command Complete for the cancel is sent after this handler returns; the connection
        # event must follow it, so it is queued behind it rather than sent now.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class RangeLink(LocalLink):
    """A `LocalLink` where a controller can be out of range of everyone else."""

    def __init__(self, supervision_timeout_s: float = 4.0) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.supervision_timeout_s = supervision_timeout_s
        self._away: set[Controller] = set()
        self._timers: dict[Controller, asyncio.TimerHandle] = {}

    def is_in_range(self, controller: Controller) -> bool:
        return controller not in self._away

    def set_in_range(self, controller: Controller, in_range: bool) -> None:
        if in_range:
            self._away.discard(controller)
            if (timer := self._timers.pop(controller, None)) is not None:
                timer.cancel()
            return
        if controller in self._away:
            return
        self._away.add(controller)
        loop = asyncio.get_running_loop()
        self._timers[controller] = loop.call_later(
            self.supervision_timeout_s, self._supervision_timeout, controller
        )

    def _supervision_timeout(self, controller: Controller) -> None:
        self._timers.pop(controller, None)
        for connection in list(controller.le_connections.values()):
            peer = self._controller_at(connection.peer_address)
            if connection.peer_address in controller.le_connections:
                controller.on_le_disconnected(connection, CONNECTION_TIMEOUT_REASON)
            if (
                peer is not None
                and (peer_end := peer.le_connections.get(connection.self_address)) is not None
            ):
                peer.on_le_disconnected(peer_end, CONNECTION_TIMEOUT_REASON)
            log.info(
                "simulated supervision timeout",
                extra={"node": controller.name, "peer": str(connection.peer_address)},
            )

    def _controller_at(self, address: hci.Address) -> Controller | None:
        found: Controller | None = self.find_le_controller(address)
        return found

    # Traffic. A dropped PDU simply never arrives, which is what the far end of a real radio sees.

    def send_advertising_pdu(self, sender_controller: Controller, packet: Any) -> None:
        if sender_controller in self._away:
            return
        loop = asyncio.get_running_loop()
        for c in self.controllers:
            if c is not sender_controller and c not in self._away:
                loop.call_soon(c.on_ll_advertising_pdu, packet)

    def send_acl_data(
        self, sender_controller: Controller, destination_address: hci.Address, transport: Any, data: bytes
    ) -> None:
        if sender_controller in self._away or self._controller_at(destination_address) in self._away:
            return
        super().send_acl_data(sender_controller, destination_address, transport, data)

    def send_ll_control_pdu(
        self, sender_address: hci.Address, receiver_address: hci.Address, packet: Any
    ) -> None:
        if (
            self._controller_at(sender_address) in self._away
            or self._controller_at(receiver_address) in self._away
        ):
            return
        super().send_ll_control_pdu(sender_address, receiver_address, packet)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


async def new_node(link: RangeLink, name: str, address: str) -> tuple[Device, SimController]:
    """A powered-on bumble host (`Device`) over its own virtual controller on `link`."""
    controller = SimController(name, link=link)
    host = Host(controller_source=controller, controller_sink=AsyncPipeSink(controller))
    device = Device(name=name, address=hci.Address(address), host=host)
    await device.power_on()
    return device, controller
