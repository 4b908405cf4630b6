"""Every BLE timeout in one place, with where its value comes from.

Real adapters (BlueZ):

* `HARDWARE_CONNECT_TIMEOUT_S` = 20 s caps one whole connection attempt: BlueZ's pre-steps (device
  lookup, a short discovery when the device is not cached), LE Create Connection, the MTU exchange and
  full GATT service discovery. That is bleak-retry-connector's `BLEAK_TIMEOUT`, the value Home
  Assistant settled on across its fleet of BlueZ adapters and proxies; bleak's own default is 30 s.
  The previous 10 s covered the radio connect comfortably but not service discovery on a busy adapter,
  where healthy straps then failed and backed off. Every `streaming` state reports `connect_s`, the
  time the attempt really took, so a lab sees its margin (the simulated radio takes 0.05-0.15 s with
  twelve straps connecting at once).
* `GATT_TIMEOUT_S` = 10 s bounds each later GATT operation (subscribe, one-off reads), so a
  `start_notify` that never returns (bleak #484) cannot freeze a source.
* `SCAN_TIMEOUT_S` = 15 s to find a strap (straps advertise about once a second, slower when idle).
* `DISCONNECT_TIMEOUT_S` = 5 s to let a dropped client disconnect cleanly.

The simulated radio answers in milliseconds, so the simulator uses short connect and scan timeouts.
"""

from __future__ import annotations

HARDWARE_CONNECT_TIMEOUT_S = 20.0
GATT_TIMEOUT_S = 10.0
SCAN_TIMEOUT_S = 15.0
DISCONNECT_TIMEOUT_S = 5.0

SIM_CONNECT_TIMEOUT_S = 2.0
SIM_SCAN_TIMEOUT_S = 3.0
