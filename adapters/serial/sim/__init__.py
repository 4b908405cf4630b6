"""Simulated serial devices on real ptys: a poll-mode bike, a listen-mode bus, a DIY cadence sensor,
capture replay, ride profiles and fault injection. The adapters under test open them with real pyserial."""
