"""Exit rules (one registry), their replay on saved outputs, threshold solvers, certified thresholds and
the runtime that really stops."""
