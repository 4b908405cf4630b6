"""Serial sensors: the Peloton bike bus, the DIY cadence line protocol, and the pyserial sources."""
