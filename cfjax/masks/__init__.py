"""Saliency maps, their thresholds and their scores against ground-truth masks: the one definition of
"the counterfactual map" that training, `--mode=explain`, `cfjax.restore` and the figures all use.

* `maps`: the counterfactual map |x - x_hat| (reduced over channels, optionally blurred) and the
  trivial baselines (dark pixels, local contrast); `NORMAL_CLASS`, the class a counterfactual
  removes damage toward;
* `attribution`: gradient baselines on a classifier (input gradients, integrated gradients, Grad-CAM);
* `thresholds`: binarising maps (fixed fraction, Otsu, tuned, top-k);
* `metrics`: IoU, Dice, AUROC / AP from per-image counts;
* `tolerant`, `centerline`: the crack literature's scores with a distance tolerance (tolerant F1 as ODS /
  OIS; clIoU on dilated skeletons), and disk dilation;
* `thin`: thin-mask options scored as rows of their own (ridge NMS, a sharper channel reduction);
* `scoring`: per-image counts in one jitted pass, and the summary per method and thresholding.
"""

from cfjax.masks.maps import NORMAL_CLASS

__all__ = ["NORMAL_CLASS"]
