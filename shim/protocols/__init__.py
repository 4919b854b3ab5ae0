"""Pure translation between each client protocol's wire format and the generation contract."""
