"""The operator's sans-I/O core: spec to desired state and plans, with no cluster access."""
