"""The worker's sans-I/O core: pure decisions, no sockets, no Kafka, no event loop."""
