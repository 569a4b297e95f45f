"""Which clean test images a run gets wrong, how sure it is of them, and whether colour explains them.

    PYTHONPATH=. python experiments/clean_errors.py --workdir=runs/fruits_detector_s0 [--out=DIR]

An uncertainty score that ranks wrong predictions below right ones (the detector GAN's p_fake on fruit,
docs/robustness.md) is only understood by looking at the errors. For the run in --workdir this prints, per
wrong test image: its label, the predicted class's probability, and p_fake (GAN runs); it saves a contact
sheet of them (with, for GAN runs, the counterfactual toward the true class below each) and gives each
class's colour on the training and test splits: the share of images whose foreground (pixels not near
white) is red on average (mean R − G > 0.1). A class-colour gap the errors follow is a shortcut the
classifier may have learned. Writes DIR/clean_errors.{json,md,png} (DIR defaults to WORKDIR/clean_errors).
"""

import argparse
import json
import os

import numpy as np
from PIL import Image

import cfjax
from cfjax.data import pipeline

RED = 0.1  # mean R − G over the foreground above which an image counts as red


def red_share_by_class(images: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Per class, the share of images whose foreground (any channel mean below 0.9: not the white
    background) is red on average; None for a class with no image."""
    foreground = images.mean(-1) < 0.9
    redness = np.array([(image[..., 0] - image[..., 1])[mask].mean() if mask.any() else 0.0
                        for image, mask in zip(images, foreground)])
    return [float((redness[labels == c] > RED).mean()) if (labels == c).any() else None
            for c in range(num_classes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or os.path.join(args.workdir, "clean_errors")
    run = cfjax.restore(args.workdir)
    num_classes = run.config.num_classes
    test = pipeline.evaluation_arrays(run.config, "test")
    images, labels = test["image"], test["label"]
    probabilities = np.asarray(run.probabilities(images))
    wrong = np.flatnonzero(probabilities.argmax(-1) != labels)
    is_gan = run.config.model in ("gan", "robust_gan")
    p_fake = np.asarray(run.p_fake(images)) if is_gan else None
    errors = [{"index": int(i), "label": int(labels[i]), "predicted": int(probabilities[i].argmax()),
               "confidence": float(probabilities[i].max()), "p_fake": None if p_fake is None else float(p_fake[i])}
              for i in wrong]
    train = pipeline.evaluation_arrays(run.config, "train")
    colour = {"train": red_share_by_class(train["image"], train["label"], num_classes),
              "test": red_share_by_class(images, labels, num_classes)}
    colour["errors"] = red_share_by_class(images[wrong], labels[wrong], num_classes)
    summary = {"workdir": args.workdir, "num_test": len(labels), "errors": errors,
               "red_share_by_class": colour,
               "p_fake_right_quantiles_10_50_90": None if p_fake is None else
               np.quantile(p_fake[probabilities.argmax(-1) == labels], [0.1, 0.5, 0.9]).tolist()}
    os.makedirs(out, exist_ok=True)
    if len(wrong):
        rows = [np.concatenate(list(images[wrong]), 1)]
        if is_gan:
            rows.append(np.concatenate(list(np.asarray(run.counterfactual(images[wrong], labels[wrong]))), 1))
        sheet = (np.concatenate(rows, 0) * 255).clip(0, 255).astype(np.uint8)
        Image.fromarray(sheet).save(os.path.join(out, "clean_errors.png"))
    lines = [f"# Clean test errors of {args.workdir}: {len(wrong)} of {len(labels)}", "",
             "| test index | label | predicted | confidence | p_fake |", "|---|---|---|---|---|"]
    lines += [f"| {e['index']} | {e['label']} | {e['predicted']} | {e['confidence']:.3f} | "
              f"{'—' if e['p_fake'] is None else format(e['p_fake'], '.3f')} |" for e in errors]
    lines += ["", f"Share of red images (mean R − G > {RED} over the foreground) per class:", "",
              "| images | " + " | ".join(f"class {c}" for c in range(num_classes)) + " |",
              "|---|" + "---|" * num_classes]
    lines += [f"| {name} | " + " | ".join("—" if s is None else f"{s:.2f}" for s in shares) + " |"
              for name, shares in colour.items()]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "clean_errors.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "clean_errors.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(text)


if __name__ == "__main__":
    main()
