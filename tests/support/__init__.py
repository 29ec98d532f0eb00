"""Shared test vocabulary: DNS cases, fixture clusters, in-process servers."""
