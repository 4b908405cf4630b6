"""I/O adapters around ridesync's sans-I/O protocols: BLE (bleak) and serial (pyserial)."""
