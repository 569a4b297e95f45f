"""`--mode=explain`: score a trained run's saliency maps (its kind's `saliency_methods`, thresholded and
scored by `cfjax.masks`) on its test split or on a folder of image/mask pairs, with figures and a report."""
