"""The `aep` command: one module per command group, sharing argument helpers."""
