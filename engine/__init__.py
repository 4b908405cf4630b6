"""ridesync engine: the core that never imports a radio or a serial port.

Sensors reach it as typed `engine.readings.Reading` values from adapters; rides live in Automerge
documents behind `engine.crdt`; the backend and the class hub are aiohttp applications.
"""
