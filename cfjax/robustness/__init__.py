"""Robustness of trained runs: PGD sweeps, gradient-masking checks and D's p_fake as uncertainty."""
