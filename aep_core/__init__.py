"""aep_core: early-exit neural networks (AEP, EENets and the survey's methods) in PyTorch."""

__version__ = "0.1.0"
