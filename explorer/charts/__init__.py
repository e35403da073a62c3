"""Altair chart builders, one module per page family; each takes plain results and returns a chart."""
