"""Serving: the per-query protocol decision and the UDP and TCP transports around it."""
