"""automerge-repo-compatible sync: the wire codec, per-connection state machine and retry policy.

Everything in this package is sans-I/O; the aiohttp server and the device client do the I/O.
"""
