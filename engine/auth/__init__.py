"""Signed device tokens, shared by the class hub and the sync endpoint."""
