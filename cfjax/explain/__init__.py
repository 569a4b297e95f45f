"""Saliency from counterfactuals, thresholded masks and their IoU against ground truth."""
