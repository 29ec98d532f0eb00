"""Tests of deploy/: the Kubernetes manifests and the container image recipe."""
