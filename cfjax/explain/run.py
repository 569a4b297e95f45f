"""`explain(config, workdir)`: restore a run, make its saliency maps, threshold and score them against
ground truth, on the run's test split or on any folder of image/mask pairs; write explain.json,
explain.md and figures. Called by `python -m cfjax.main --mode=explain` and by notebooks.
"""

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cfjax import evaluate, interrupts, storage, tiling, visualize, workdir_lock
from cfjax.data import pipeline
from cfjax.errors import DataError
from cfjax.explain import folder as folders
from cfjax.explain import outputs, report, targets
from cfjax.explain.scorer import MaskScorer
from cfjax.masks import scoring, thresholds
from cfjax.saved_runs import LoadedRun, load_run
from cfjax.version import __version__


def explain(config: ml_collections.ConfigDict, workdir: str, *, folder: str | None = None, split: str = "test",
            mask_threshold: int | None = 127, crack_value: int | None = None, out_dir: str | None = None,
            eval_data: str | None = None) -> dict:
    """Score every saliency method of the run in `workdir` (its kind's `saliency_methods`); returns explain.json's
    content. With `folder`, images come from FOLDER/images and masks from FOLDER/masks, binarised by
    `crack_value` (exact value) or `mask_threshold`; thresholds are still tuned on the run's validation
    split when its dataset is present here. With `eval_data` (another prepared dataset), its `split` is
    scored instead of the run's own, every threshold still from the run's validation split (cross-source)."""
    start = time.time()
    if eval_data is not None and folder is not None:
        raise DataError("--eval_data and --folder each name the images to explain: give one of them")
    target_config = config if eval_data is None else targets.target_config(config, eval_data, split)
    run = load_run(config, workdir)
    out_dir = out_dir or os.path.join(workdir, _default_out_name(folder, eval_data))
    primary = jax.process_index() == 0
    if primary:
        storage.check_writable(out_dir)  # before minutes of scoring, not after
    methods = run.kind.saliency_methods()
    validation, validation_note = _validation_arrays(config)
    if eval_data is not None and validation is None:
        raise DataError(f"--eval_data={eval_data}: every threshold comes from the run's own validation split, "
                        f"and here it is {validation_note.removeprefix('not tuned: ')}")
    with workdir_lock.output_held(out_dir, enabled=primary):
        scorer = MaskScorer(run, methods, config, validation)
        if folder is None:
            data = pipeline.evaluation_arrays(target_config, split)
            scores, examples = scorer.on_split(data), _split_examples(data, split)
            source = f"the {split} split of {target_config.data.name}"
        else:
            examples = folders.load_pairs(folder, mask_threshold=mask_threshold, crack_value=crack_value)
            _add_maps(examples, run, methods, config)
            scores = scorer.on_images(examples)
            source = f"folder {os.path.abspath(folder)}"
        has_mask = scores["has_mask"]
        summary = scorer.summary(scores)
        damaged, empty = scoring.damage_rows(scores, has_mask)
        tuned = scorer.validation_scores is not None
        results = {
            "workdir": workdir, "step": run.step, "model": run.kind.name, "config_name": config.name,
            "data": {"source": source, "num_images": len(has_mask), "num_damaged": int(damaged.sum()),
                     "num_empty": int(empty.sum()), "trained_on": config.data.name,
                     "evaluated_on": target_config.data.name if folder is None else source,
                     "cross_source": eval_data is not None},
            "settings": {**scorer.settings(),
                         "tuned_on": "validation" if tuned else validation_note,
                         "thresholds_from": f"the validation split of {config.data.name}" if tuned else None,
                         "mask_rule": None if folder is None else
                         (f"== {crack_value}" if crack_value is not None else f"> {mask_threshold}")},
            "methods": summary,
            "versions": {"cfjax": __version__, "jax": jax.__version__},
        }
        interrupts.check()  # a stop signal whose exception a callback swallowed: write nothing
        storage.make_dirs(out_dir)
        results["figures"] = _figures(out_dir, examples, scores, damaged, run, methods, summary, config)
        if methods.toward_each_class is not None and config.num_classes > 2 and folder is None:
            results["multiclass"] = _multiclass(out_dir, data, run, methods.toward_each_class)
        results["wall_time_s"] = time.time() - start
        if primary:
            storage.write_json_atomic(os.path.join(out_dir, "explain.json"), results)
            storage.write_text_atomic(os.path.join(out_dir, "explain.md"), report.markdown_table(results))
    results["out_dir"] = out_dir
    return results


def _default_out_name(folder: str | None, eval_data: str | None) -> str:
    if folder is not None:
        return outputs.for_folder(folder)
    return outputs.OWN if eval_data is None else outputs.for_dataset(eval_data)


def _validation_arrays(config: ml_collections.ConfigDict) -> tuple[dict | None, str]:
    """The damaged images of the run's validation split (the only ones thresholds are tuned on), or
    None with the reason (its dataset is not prepared here)."""
    try:
        validation = pipeline.evaluation_arrays(config, "validation")
    except DataError as error:
        return None, f"not tuned: validation split unavailable ({error})"
    damaged = validation["mask"].any(axis=(1, 2)) & np.asarray(validation.get("has_mask", True), bool)
    if not damaged.any():
        return None, "not tuned: no validation image has a damage mask"
    return {name: np.asarray(array)[damaged] for name, array in validation.items()}, "validation"


def _split_examples(data: dict, split: str) -> list[dict]:
    return [{"name": f"{split}_{i:05d}", "image": data["image"][i], "mask": data["mask"][i],
             "label": int(data["label"][i])} for i in range(len(data["label"]))]


def _add_maps(examples: list, run: LoadedRun, methods, config: ml_collections.ConfigDict) -> None:
    """Each example gets "maps" {method: (H, W)} (and "counterfactual" for GAN runs) at its own size: runs
    trained on crops see overlapping tiles blended seamlessly (`cfjax.tiling`), the others a resized copy."""
    size, batch_size = config.data.image_size, config.eval.batch_size
    tile = pipeline.tiles_photos(config)
    wanted = methods.names + (("counterfactual_image",) if methods.draws_counterfactual else ())

    def maps_only(params, images):
        maps, extras = methods.maps(params, images, jnp.full(images.shape[:1], -1, jnp.int32))
        return {name: {**maps, **extras}[name] for name in wanted}

    batch_fn = tiling.on_mesh(maps_only, run.params, run.mesh, batch_size)
    for example in examples:
        folders.check_tileable(example["image"], size, example["name"])
        shape = example["image"].shape[:2]
        image = example["image"] if tile else folders.resize_to(example["image"], size)
        placed = tiling.apply(batch_fn, image, tiling.Layout.of(image.shape[:2], size, overlap=tile),
                              batch_size=batch_size)
        if not tile:
            placed = {name: folders.resize_back(placed[name], shape) for name in wanted}
        example["counterfactual"] = placed.pop("counterfactual_image", None)
        example["maps"] = placed


def _figures(out_dir, examples, scores, damaged, run, methods, summary, config) -> dict:
    """Figures of the first method (the run's own masks) at its main thresholding, damaged images only."""
    name = methods.names[0]
    thresholding = "tuned" if "tuned" in summary[name]["thresholdings"] else "otsu"
    tuned_index = None
    if thresholding == "tuned":
        threshold = summary[name]["thresholdings"]["tuned"]["threshold"]
        tuned_index = int(np.argmin(np.abs(np.asarray(evaluate.threshold_grid(config))
                                           - threshold)))
    ious = scoring.per_image_iou(scores, name, thresholding, tuned_index)
    rows = np.flatnonzero(damaged)
    if not len(rows):
        return {}
    best_first = rows[np.argsort(-ious[rows], kind="stable")]
    limit, sheet = config.explain.max_figures, config.explain.contact_rows
    wanted = set(best_first[:limit]) | set(best_first[:sheet]) | set(best_first[::-1][:sheet])
    picked = [i for i in best_first if i in wanted]  # still best first; the worst are last
    if "maps" not in examples[picked[0]]:
        _add_split_maps([examples[i] for i in picked], run, methods)
    threshold_of = {"tuned": lambda m: m > threshold,
                    "otsu": lambda m: np.asarray(thresholds.otsu(jnp.asarray(m)[None])[0])}[thresholding]
    figure_examples = []
    for i in picked:
        example = examples[i]
        saliency_map = example["maps"][name]
        panels = report.example_panels(example["image"], saliency_map, threshold_of(saliency_map), example["mask"],
                                       example.get("counterfactual"))
        figure_examples.append({"name": example["name"], "iou": float(ious[i]), "panels": panels})
    written = report.write_figures(out_dir, figure_examples, np.arange(len(figure_examples)),
                                   max_figures=limit, contact_rows=sheet)
    return {"method": name, "thresholding": thresholding, **written}


def _multiclass(out_dir: str, data: dict, run: LoadedRun, toward) -> dict:
    """K > 2: over the split, how often each target is the nearest and how surely D sees each target
    reached; a figure of the masks toward every class for a few images of each class."""
    config = run.config
    k = config.num_classes

    def batch_fn(params, batch):
        out = toward(params, batch["image"], batch["label"])
        return {"nearest": out["nearest"], "target_probability": out["target_probability"],
                "edit_size": out["edit_size"]}

    per_image = evaluate.SplitEvaluator(data, batch_fn, batch_size=config.eval.batch_size, mesh=run.mesh,
                                        fields=("image", "label")).run(run.params)
    labels = data["label"]
    nearest = np.zeros((k, k), int)
    np.add.at(nearest, (labels, per_image["nearest"]), 1)
    reached = np.stack([per_image["target_probability"][labels == c].mean(axis=0) for c in range(k)])
    edit = np.stack([per_image["edit_size"][labels == c].mean(axis=0) for c in range(k)])
    rows = np.concatenate([np.flatnonzero(labels == c)[:config.explain.contact_rows] for c in range(k)])
    out = jax.jit(toward)(run.params, data["image"][rows], labels[rows])
    panels = []
    for i in range(len(rows)):
        row = [np.asarray(data["image"][rows[i]])]
        for t in range(k):
            heat = visualize.heatmap(np.asarray(out["maps"][i, t]), max(float(out["maps"][i].max()), 1e-3))
            row += [np.asarray(out["counterfactuals"][i, t]),
                    visualize.outline(heat) if t == int(out["nearest"][i]) else heat]
        panels.append(row)
    path = os.path.join(out_dir, "multiclass.png")
    visualize.save_png(path, visualize.panel_grid(panels, upscale=max(1, 128 // data["image"].shape[1])))
    return {"nearest_target_counts": nearest.tolist(), "target_probability": reached.tolist(),
            "edit_size": edit.tolist(), "figure": path,
            "layout": "rows: class -> target; figure columns: x, then x_hat_t and its saliency for each t "
                      "(nearest target framed in green)"}


def _add_split_maps(examples: list, run: LoadedRun, methods) -> None:
    """Recompute the maps of a few split images (the scoring pass keeps only counts)."""
    images = np.stack([e["image"] for e in examples])
    labels = np.array([e["label"] for e in examples], np.int32)
    maps, extras = jax.jit(methods.maps)(run.params, images, labels)
    for i, example in enumerate(examples):
        example["maps"] = {name: np.asarray(maps[name][i]) for name in methods.names}
        if methods.draws_counterfactual:
            example["counterfactual"] = np.asarray(extras["counterfactual_image"][i])
