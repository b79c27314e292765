"""Frozen copies of earlier implementations, the reference that faster rewrites must reproduce exactly."""
