"""Clarion's local stack: a real Kafka broker and a real Kubernetes control plane.

Everything runs as plain processes on 127.0.0.1, built or fetched from the package
registries into a cache outside the checkout, so that integration tests and the demo
exercise the same services that production uses, with no container runtime.

``python -m clarion_devstack up|status|down|build`` drives it; ``make env-up`` and
friends call that.
"""
