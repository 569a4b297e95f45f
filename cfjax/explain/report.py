"""What `--mode=explain` writes beside the numbers: a markdown table and the figures (per image, and
contact sheets of the best and worst cases)."""

import os

import numpy as np

from cfjax import storage, visualize

THRESHOLDING_ORDER = ("tuned", "otsu", "fixed", "top_k")


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(results: dict) -> str:
    """One row per method: AUROC, AP, and per-image mean IoU under each thresholding, then Dice and the
    false-positive area on images without damage at the first thresholding present; then, when counted,
    the tolerant scores: tolerant F1 at the ODS threshold chosen on validation, the test-optimal ODS
    (oracle) and OIS, and clIoU at the tuned threshold."""
    methods = results["methods"]
    present = [t for t in THRESHOLDING_ORDER if any(t in m["thresholdings"] for m in methods.values())]
    main = present[0]
    tolerant = any("tolerant" in m for m in methods.values())
    settings = results.get("settings", {})
    d, d_cl = settings.get("tolerance", "d"), settings.get("centerline_tolerance", "d")
    header = (["method", "pixel AUROC", "AP"] + [f"IoU {t}" for t in present]
              + [f"Dice {main}", f"FP area ({main}, no damage)"])
    if tolerant:
        header += [f"F1 ODS, d={d} (τ val)", "F1 ODS oracle (τ test)", "F1 OIS (oracle per image)",
                   f"clIoU tuned, d={d_cl}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, method in methods.items():
        cells = [name, _fmt(method["auroc"]), _fmt(method["ap"])]
        for t in present:
            entry = method["thresholdings"].get(t)
            text = _fmt(entry and entry["iou_mean"])
            if entry and "threshold" in entry:
                text += f" (τ {entry['threshold']:.2f})"
            cells.append(text)
        main_entry = method["thresholdings"].get(main, {})
        cells += [_fmt(main_entry.get("dice_mean")), _fmt(main_entry.get("fp_area_empty"))]
        if tolerant:
            scores = method.get("tolerant", {})
            ods = _fmt(scores.get("ods_f1"))
            if "ods_threshold" in scores:
                ods += f" (τ {scores['ods_threshold']:.2f})"
            oracle = _fmt(scores.get("ods_oracle_f1"))
            if "ods_oracle_threshold" in scores:
                oracle += f" (τ {scores['ods_oracle_threshold']:.2f})"
            cells += [ods, oracle, _fmt(scores.get("ois_f1")),
                      _fmt(method["thresholdings"].get("tuned", {}).get("cliou"))]
        lines.append("| " + " | ".join(cells) + " |")
    data = results["data"]
    caption = (f"{results['model']} run {results['workdir']} (step {results['step']}) on {data['source']}: "
               f"{data['num_damaged']} images with damage scored, {data['num_empty']} without (false-positive "
               f"area only). IoU is the per-image mean over damaged images, crack class only (no mIoU with the "
               f"background); dataset-level IoU and Dice per thresholding are in explain.json.")
    if tolerant:
        caption += (f" Tolerant F1 counts a pixel as matched within {d} px (Euclidean): ODS pools counts over "
                    f"images at one τ, chosen on validation (the honest number) or on test itself (oracle); "
                    f"OIS takes each test image's best τ (an oracle too). clIoU is the dataset-level IoU of the "
                    f"skeletons dilated by a disk of radius {d_cl}, at the tuned τ. Rows ending in _nms or a "
                    f"channel reduction are thin-mask options; choose among them by `validation` in explain.json.")
    if data.get("cross_source"):
        caption += (f" Cross-source: trained on {data['trained_on']}, scored on {data['evaluated_on']} with no "
                    f"retuning there: every τ (tuned, top-k, ODS) comes from the validation split of "
                    f"{data['trained_on']}.")
    return caption + "\n\n" + "\n".join(lines) + "\n"


def example_panels(image, saliency_map, predicted, truth, counterfactual=None) -> list:
    """x | x_hat (GAN runs) | saliency heatmap | predicted mask | ground truth."""
    panels = [np.asarray(image, np.float32)]
    if counterfactual is not None:
        panels.append(np.asarray(counterfactual, np.float32))
    saliency_map = np.asarray(saliency_map, np.float32)
    panels += [visualize.heatmap(saliency_map, max(float(saliency_map.max()), 1e-3)),
               visualize.grey_to_rgb(predicted), visualize.grey_to_rgb(truth)]
    return panels


def write_figures(out_dir: str, examples: list, order: np.ndarray, *, max_figures: int, contact_rows: int) -> dict:
    """`examples[i]` = {"name", "iou", "panels"}; `order` sorts them from best to worst IoU.
    Writes figures/NAME.png for the first `max_figures` and best.png / worst.png contact sheets."""
    figures = os.path.join(out_dir, "figures")
    storage.make_dirs(figures)
    upscale = lambda panels: max(1, 192 // panels[0].shape[0])
    written = []
    for example in examples[:max_figures]:
        path = os.path.join(figures, f"{example['name']}_iou{example['iou']:.2f}.png")
        visualize.save_png(path, visualize.panel_grid([example["panels"]], upscale=upscale(example["panels"])))
        written.append(path)
    sheets = {}
    same_size = len({e["panels"][0].shape for e in examples}) == 1
    for label, rows in (("best", order[:contact_rows]), ("worst", order[::-1][:contact_rows])):
        if not len(rows) or not same_size:
            continue
        panels = [examples[i]["panels"] for i in rows]
        sheets[label] = os.path.join(out_dir, f"{label}.png")
        visualize.save_png(sheets[label], visualize.panel_grid(panels, upscale=upscale(panels[0])))
    return {"per_image": written, **sheets}
