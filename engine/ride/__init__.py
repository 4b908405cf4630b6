"""Ride documents: the packed sample codec, the per-ride document set and the pure authority policy."""
