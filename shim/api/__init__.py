"""The HTTP layer: one Flask blueprint per client protocol, and what they share."""
