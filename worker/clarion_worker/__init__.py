"""Clarion's broadcast worker: Kafka records to WebSocket and SSE clients.

``core`` decides (settings, decoding, routing, resume, backpressure, protocol)
without I/O; the modules beside it drive it from aiokafka and Starlette.
"""
