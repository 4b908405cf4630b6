"""hrlogger: logs a BLE heart-rate strap (bleak) and a Peloton bike's serial bus (pyserial)."""

from hrlogger.bike import BikeLog, read_bike
from hrlogger.live import publish_heart_rate
from hrlogger.strap import HrLog, StrapLogger, find_strap, log_heart_rate, parse_measurement

__all__ = [
    "BikeLog",
    "HrLog",
    "StrapLogger",
    "find_strap",
    "log_heart_rate",
    "parse_measurement",
    "publish_heart_rate",
    "read_bike",
]
