"""kdns: a cluster DNS server for Kubernetes, serving precompiled wire answers."""

__version__ = "0.1.0"
