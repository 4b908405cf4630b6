"""`ridesync bridge`: any bike ridesync reads, advertised as a standard BLE bike (README.md, "The bridge")."""
