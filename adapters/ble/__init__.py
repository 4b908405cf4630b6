"""BLE heart-rate straps: the Heart Rate Measurement protocol and the bleak source around it."""
