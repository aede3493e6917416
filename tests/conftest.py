"""Shared fixtures: the local stack (real Kafka and Kubernetes) for integration tests."""

pytest_plugins = ["clarion_devstack.pytest_plugin"]
