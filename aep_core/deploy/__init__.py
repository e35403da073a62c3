"""Deployment: the device / edge / cloud split simulator and per-segment export."""
