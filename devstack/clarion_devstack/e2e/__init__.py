"""End-to-end harness: the operator, the UnionFlow channel, workers behind HAProxy."""
