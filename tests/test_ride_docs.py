"""`RideDocs.device_doc`: the one way to find a device's own document among a ride's documents."""

from __future__ import annotations

from engine.ride import schema
from engine.ride.model import DeviceDoc, RideDocs
from engine.roles import Role


def _doc(device: str, role: Role) -> DeviceDoc:
    ref = schema.own_ref("r1", device, role)
    assert ref is not None
    return DeviceDoc(ref)


def test_device_doc_matches_device_and_role() -> None:
    bike, app, same_id_app = _doc("bike-1", Role.BIKE), _doc("tab-1", Role.APP), _doc("bike-1", Role.APP)
    docs = RideDocs("r1", devices=(app, same_id_app, bike))
    assert docs.device_doc("bike-1", Role.BIKE) is bike
    assert docs.device_doc("bike-1", Role.APP) is same_id_app
    assert docs.device_doc("tab-1", Role.APP) is app
    assert docs.device_doc("tab-1", Role.BIKE) is None
    assert docs.device_doc("bike-1", Role.VIEWER) is None
