"""What a trained early-exit network tells: calibration, the out-of-distribution score, saliency per exit,
and the AEP pruning report."""
