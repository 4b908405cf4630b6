"""The bridge's GATT database and advertisement, as bumble objects.

Services, in the order a head unit looks for them:

* Fitness Machine (0x1826): Fitness Machine Feature (0x2ACC, read), Indoor Bike Data (0x2AD2, notify),
  Fitness Machine Control Point (0x2AD9, write + indicate), Fitness Machine Status (0x2ADA, notify);
* Cycling Power (0x1818): Measurement (0x2A63, notify), Feature (0x2A65), Sensor Location (0x2A5D);
* Cycling Speed and Cadence (0x1816): Measurement (0x2A5B, notify), Feature (0x2A5C), Sensor Location;
* Heart Rate (0x180D, only with a strap): Measurement (0x2A37, notify), Body Sensor Location (0x2A38);
* Device Information (0x180A): manufacturer, model, firmware.

The advertisement lists the services' 16-bit UUIDs and carries the FTMS Service Data (machine
available, indoor bike) that FTMS centrals filter on; the name goes whole into the scan response, and
into the advertisement as far as the 31 bytes allow.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bumble import gatt
from bumble.core import AdvertisingData
from bumble.profiles.device_information_service import DeviceInformationService

from adapters.ble.bridge.model import (
    CPS_FEATURE_VALUE,
    CSC_FEATURE_VALUE,
    FTMS_FEATURE_VALUE,
    FTMS_SERVICE_DATA,
    SENSOR_LOCATION_VALUE,
)
from adapters.ble.cps import CYCLING_POWER_MEASUREMENT_UUID, CYCLING_POWER_SERVICE_UUID
from adapters.ble.csc import CSC_MEASUREMENT_UUID, CSC_SERVICE_UUID
from adapters.ble.ftms import FITNESS_MACHINE_SERVICE_UUID, INDOOR_BIKE_DATA_UUID
from adapters.ble.gatt_fields import uuid16
from adapters.ble.hrm import BODY_SENSOR_LOCATION_UUID, HEART_RATE_MEASUREMENT_UUID, HEART_RATE_SERVICE_UUID

FTMS_FEATURE_UUID = uuid16(0x2ACC)
FTMS_CONTROL_POINT_UUID = uuid16(0x2AD9)
FTMS_STATUS_UUID = uuid16(0x2ADA)
CPS_FEATURE_UUID = uuid16(0x2A65)
CSC_FEATURE_UUID = uuid16(0x2A5C)
SENSOR_LOCATION_UUID = uuid16(0x2A5D)
CHEST = bytes([1])  # Body Sensor Location: the strap paired to the bridge is a chest strap
ADVERTISING_MAX = 31

_P = gatt.Characteristic.Properties
_READABLE = gatt.Characteristic.READABLE
_WRITEABLE = gatt.Characteristic.WRITEABLE


def _read_only(uuid: str, value: bytes) -> Any:
    return gatt.Characteristic(uuid, _P.READ, _READABLE, value)


def _notify(uuid: str) -> Any:
    return gatt.Characteristic(uuid, _P.NOTIFY, _READABLE, b"")


@dataclass(slots=True)
class BridgeGatt:
    """The characteristics the peripheral notifies, once added to a device."""

    services: list[Any]
    indoor_bike_data: Any
    control_point: Any
    status: Any
    power: Any
    csc: Any
    heart_rate: Any | None
    service_uuids: list[str]


def build_gatt(
    *,
    with_hr: bool,
    on_control_point: Callable[[Any, bytes], None],
    model_number: str,
    firmware: str,
) -> BridgeGatt:
    """`on_control_point(connection, value)` gets every control point write (it must not block)."""
    indoor_bike_data = _notify(INDOOR_BIKE_DATA_UUID)
    control_point: Any = gatt.Characteristic(
        FTMS_CONTROL_POINT_UUID,
        _P.WRITE | _P.INDICATE,
        _WRITEABLE,
        gatt.CharacteristicValue(write=lambda connection, value: on_control_point(connection, bytes(value))),
    )
    status = _notify(FTMS_STATUS_UUID)
    power = _notify(CYCLING_POWER_MEASUREMENT_UUID)
    csc = _notify(CSC_MEASUREMENT_UUID)
    services: list[Any] = [
        gatt.Service(
            FITNESS_MACHINE_SERVICE_UUID,
            [_read_only(FTMS_FEATURE_UUID, FTMS_FEATURE_VALUE), indoor_bike_data, control_point, status],
        ),
        gatt.Service(
            CYCLING_POWER_SERVICE_UUID,
            [
                power,
                _read_only(CPS_FEATURE_UUID, CPS_FEATURE_VALUE),
                _read_only(SENSOR_LOCATION_UUID, SENSOR_LOCATION_VALUE),
            ],
        ),
        gatt.Service(
            CSC_SERVICE_UUID,
            [
                csc,
                _read_only(CSC_FEATURE_UUID, CSC_FEATURE_VALUE),
                _read_only(SENSOR_LOCATION_UUID, SENSOR_LOCATION_VALUE),
            ],
        ),
    ]
    uuids = [FITNESS_MACHINE_SERVICE_UUID, CYCLING_POWER_SERVICE_UUID, CSC_SERVICE_UUID]
    heart_rate = None
    if with_hr:
        heart_rate = _notify(HEART_RATE_MEASUREMENT_UUID)
        services.append(
            gatt.Service(HEART_RATE_SERVICE_UUID, [heart_rate, _read_only(BODY_SENSOR_LOCATION_UUID, CHEST)])
        )
        uuids.append(HEART_RATE_SERVICE_UUID)
    services.append(
        DeviceInformationService(
            manufacturer_name="ridesync", model_number=model_number, firmware_revision=firmware
        )
    )
    return BridgeGatt(services, indoor_bike_data, control_point, status, power, csc, heart_rate, uuids)


def _short(uuid: str) -> bytes:
    """A SIG UUID's 16-bit form, little-endian, as advertising data carries it."""
    return struct.pack("<H", int(uuid[4:8], 16))


def advertising(name: str, service_uuids: list[str]) -> tuple[bytes, bytes]:
    """(advertising data, scan response data), each within the 31 bytes of a legacy advertisement."""
    uuid_list = b"".join(_short(u) for u in service_uuids)
    fields: list[tuple[int, bytes]] = [
        (AdvertisingData.FLAGS, bytes([0x06])),  # LE General Discoverable, BR/EDR not supported
        (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, uuid_list),
        (AdvertisingData.SERVICE_DATA_16_BIT_UUID, _short(FITNESS_MACHINE_SERVICE_UUID) + FTMS_SERVICE_DATA),
    ]
    used = sum(2 + len(value) for _, value in fields)
    encoded = name.encode()
    room = ADVERTISING_MAX - used - 2
    if len(encoded) <= room:
        fields.append((AdvertisingData.COMPLETE_LOCAL_NAME, encoded))
    elif room > 0:
        short = encoded[:room].decode(errors="ignore").rstrip().encode()
        fields.append((AdvertisingData.SHORTENED_LOCAL_NAME, short))
    scan_name = encoded[: ADVERTISING_MAX - 2].decode(errors="ignore").encode()
    scan_response = bytes(AdvertisingData([(AdvertisingData.COMPLETE_LOCAL_NAME, scan_name)]))
    return bytes(AdvertisingData(fields)), scan_response
