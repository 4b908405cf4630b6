"""Fault injection for tests and labs: a user-space TCP proxy (this machine has no tc netem)."""
