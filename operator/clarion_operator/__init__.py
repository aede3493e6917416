"""Clarion's operator: reconciles RealtimeChannel resources into Kafka topics and workers.

``core`` decides (spec validation, desired objects, topic plans, conditions) without
I/O; the kopf handlers beside it only drive it against the API server and Kafka.
"""
