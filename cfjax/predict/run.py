"""`predict(config, workdir, folder)`: a trained run over every photo under a folder. Called by
`python -m cfjax.main --mode=predict --workdir=RUN --folder=PHOTOS [--out=DIR]`; docs/predicting.md.

Per photo, what the run's kind offers (`RunKind.offers`): class probabilities and class (D's hybrid
readout, and G's head for a GAN; a classifier's softmax), p_fake and an abstain flag, the saliency map
and binary mask at the photo's full resolution, an overlay, the counterfactual. Each photo's results are
written as it is done (records/KEY.json last), so a stopped run resumes where it stopped; the tables,
summary and report are rebuilt from the records at the end.
"""

import csv
import io
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cfjax import interrupts, storage, workdir_lock
from cfjax.data import pipeline, transforms
from cfjax.data.builders import files
from cfjax.errors import ConfigError, DataError
from cfjax.masks import NORMAL_CLASS, thresholds
from cfjax.predict import abstain as abstaining
from cfjax.predict import photos, report
from cfjax.restored_run import RestoredRun, restore
from cfjax.version import __version__

# The per-photo outputs `full_resolution` is asked for, in this order, where the kind offers them.
METHODS = ("probabilities", "p_fake", "generator_probabilities", "saliency", "counterfactual")
THUMBNAIL = 192  # longest side of the report's thumbnails, pixels
PHOTO_READOUT = (
    "runs trained on crops see overlapping tiles of their training size (blended by a Hann window for maps and "
    "counterfactuals); a photo's class probabilities are those of its most damaged tile (the lowest probability "
    "of the normal class, among tiles at least half on the photo), its p_fake the tiles' mean weighted by how "
    "much of each lies on the photo. Runs trained on whole images see the photo resized.")


def predict(config: ml_collections.ConfigDict, workdir: str, folder: str, *, out_dir: str | None = None,
            abstain_threshold: float | None = None, abstain_score: str = "auto",
            saliency_threshold: float | None = None, progress: bool = True) -> dict:
    """Predict on every photo under `folder` (recursively); returns summary.json's content with "out_dir".
    A photo abstains when `abstain_score` (`abstain.CHOICES`) is above the threshold (`abstain.abstain_rule`);
    its mask is its map above `saliency_threshold`, by default the run's own rule (`mask_rule`)."""
    start = time.time()
    paths, not_images = photos.list_photos(folder)  # a missing or empty folder fails before the run is restored
    out_dir = out_dir or os.path.join(workdir, f"predict_{os.path.basename(os.path.normpath(folder))}")
    storage.check_writable(out_dir)
    run = restore(workdir, config=config)
    mask = mask_rule(run, saliency_threshold)
    with workdir_lock.output_held(out_dir):  # before the abstain threshold's pass over the validation split
        offers = set(run.offers)
        abstain = abstaining.abstain_rule(run, config, abstain_threshold, abstain_score)
        methods = tuple(method for method in METHODS if method in offers)
        for sub in ("records", "maps", "thumbs"):
            storage.make_dirs(os.path.join(out_dir, sub))
        records, skipped, resumed, computed_s, computed = [], [], 0, 0.0, 0
        settings = {"step": run.step, "abstain_score": abstain["score"], "abstain_threshold": abstain["threshold"],
                    "mask_threshold": mask and mask["threshold"], "saliency": run.saliency_settings}
        with tqdm(total=len(paths), desc="predict", unit="photo", disable=not progress) as bar:
            for relative in paths:
                key = photos.key(relative)
                record_path = os.path.join(out_dir, "records", f"{key}.json")
                done = storage.read_json(record_path)
                path, shown = os.path.join(folder, relative), photos.shown(relative)
                try:
                    made_from = {**settings, **_file_fingerprint(path)}
                    reusable = isinstance(done, dict) and done.get("made_from") == made_from
                    if reusable and done.get("path") == shown:
                        if "class" in done:  # named as the run names its classes today (older cfjax: "0 (normal)")
                            done["class_name"] = run.class_names[done["class"]]
                        records.append(done)
                        resumed += 1
                        bar.update()
                        continue
                    image = files.read_image(path)
                except DataError as error:  # reported, listed in the summary, never fatal for the others
                    skip = {"path": shown, "reason": photos.shown(str(error))}
                    tqdm.write(f"cfjax: skipped {skip['path']}: {skip['reason']}")
                    skipped.append(skip)
                    bar.update()
                    continue
                interrupts.check()
                began = time.time()
                record = predict_photo(run, transforms.to_float(image), relative, key, out_dir, methods, abstain, mask)
                record["made_from"] = made_from
                storage.write_json_atomic(record_path, record)
                computed_s += time.time() - began
                computed += 1
                records.append(record)
                bar.update()
        interrupts.check()
        summary = _summary(run, config, workdir, folder, paths, not_images, records, skipped, abstain, mask, methods)
        summary.update({"resumed": resumed, "wall_time_s": time.time() - start,
                        "photos_per_s": computed / computed_s if computed_s else None})
        _write_tables(out_dir, records, run, summary)
        storage.write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
        storage.write_text_atomic(os.path.join(out_dir, "report.html"), report.html(summary, records))
    summary["out_dir"] = out_dir
    return summary


def mask_rule(run: RestoredRun, given: float | None = None) -> dict | None:
    """{"threshold", "rule"}: how each photo's mask is drawn from its map. A threshold given (the map's
    scale differs by run: look at the saliency PNGs or explain.json) wins over the run's own rule (the
    U-Net's 0.5, the threshold --mode=explain tuned on validation, else each photo's Otsu: threshold None);
    None for a run that draws no masks, where a given threshold is a usage error."""
    if "mask" not in run.offers:
        if given is not None:
            raise ConfigError(f"--saliency_threshold={given}: a {run.kind} run draws no masks")
        return None
    if given is None:
        return {"threshold": run.mask_threshold, "rule": run.mask_rule}
    if not math.isfinite(given):
        raise ConfigError(f"--saliency_threshold={given}: give a finite number")
    return {"threshold": float(given), "rule": f"{given:.4g}, given by --saliency_threshold"}


def _file_fingerprint(path: str) -> dict:
    """What a record's reuse depends on in the photo file: a photo replaced under the same name (another
    size or modification time) is predicted again rather than served from the old record. DataError where
    the file cannot even be looked at (a broken or looping link, a file gone since the folder was listed)."""
    try:
        status = os.stat(path)
    except OSError as error:
        raise DataError(f"cannot read image {path}: {error.strerror}") from error
    return {"bytes": status.st_size, "mtime_ns": status.st_mtime_ns}


def predict_photo(run: RestoredRun, photo: np.ndarray, relative: str, key: str, out_dir: str, methods: tuple,
                  abstain: dict, mask_rule: dict | None) -> dict:
    """One photo's record; its maps, mask, overlay, counterfactual and thumbnails written under `out_dir`."""
    height, width = photo.shape[:2]
    out = run.full_resolution(photo, methods)
    weights = out["tile_weight"]
    on_photo = weights >= 0.5 * weights.max()
    record = {"path": photos.shown(relative), "key": key, "width": int(width), "height": int(height),
              "tiles": int(len(weights))}
    names = run.class_names
    if "probabilities" in out:
        probabilities = _most_damaged(out["probabilities"], on_photo)
        record.update({"class": int(np.argmax(probabilities)), "class_name": names[int(np.argmax(probabilities))],
                       "confidence": float(probabilities.max()), "probabilities": probabilities.tolist()})
    if "generator_probabilities" in out:
        g_probabilities = _most_damaged(out["generator_probabilities"], on_photo)
        record.update({"g_class": int(np.argmax(g_probabilities)), "g_probabilities": g_probabilities.tolist()})
    def tile_mean(values):  # weighted by how much of each tile lies on the photo
        return float((values * weights).sum() / weights.sum())

    # The abstain scores as tau was calibrated on them, one training-size tile: on a photo of several tiles their
    # mean (a most-damaged-tile uncertainty would grow with the tile count: the least sure of many tiles).
    if "probabilities" in out:
        record["uncertainty"] = tile_mean(1.0 - out["probabilities"].max(-1))
    if "p_fake" in out:
        record["p_fake"] = tile_mean(out["p_fake"])
    if abstain["score"] is not None:
        record["abstained"] = bool(abstain["threshold"] is not None
                                   and record[abstain["score"]] > abstain["threshold"])
    files_written = {}
    thumbs = {"photo": _thumbnail(photo)}
    if "saliency" in out:
        saliency = np.clip(out["saliency"], 0.0, 1.0)
        threshold = mask_rule["threshold"]
        if threshold is None:  # per-photo Otsu
            threshold = float(thresholds.otsu_threshold(jnp.asarray(saliency)[None])[0])
            binary = np.asarray(thresholds.otsu(jnp.asarray(saliency)[None])[0])
        else:
            binary = saliency > threshold
        overlay = _overlay(photo, binary)
        record.update({"mask_area": float(binary.mean()), "mask_threshold": float(threshold)})
        files_written["saliency"] = _save(out_dir, f"maps/{key}.saliency.png", _grey(saliency), "PNG")
        files_written["mask"] = _save(out_dir, f"maps/{key}.mask.png", _grey(binary), "PNG")
        files_written["overlay"] = _save(out_dir, f"maps/{key}.overlay.jpg", overlay, "JPEG")
        thumbs["overlay"] = _thumbnail(overlay)
    if "counterfactual" in out:
        counterfactual = np.clip(out["counterfactual"], 0.0, 1.0)
        files_written["counterfactual"] = _save(out_dir, f"maps/{key}.counterfactual.png", counterfactual, "PNG")
        thumbs["counterfactual"] = _thumbnail(counterfactual)
    record["files"] = files_written
    record["thumbs"] = {name: _save(out_dir, f"thumbs/{key}.{name}.jpg", thumb, "JPEG")
                        for name, thumb in thumbs.items()}
    return record


def _most_damaged(probabilities: np.ndarray, on_photo: np.ndarray) -> np.ndarray:
    """The probabilities of the tile least likely normal among those mostly on the photo."""
    candidates = np.flatnonzero(on_photo)
    return probabilities[candidates[np.argmin(probabilities[candidates, NORMAL_CLASS])]]


def _grey(values: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(values, np.float32), 0, 1) * 255).round().astype(np.uint8)


def _overlay(photo: np.ndarray, binary: np.ndarray) -> np.ndarray:
    """The photo with the mask tinted red (55 %) and its outside slightly dimmed."""
    alpha = 0.55 * binary[..., None]
    red = np.array([1.0, 0.1, 0.1], np.float32)
    return photo * (1 - alpha) * np.where(binary[..., None], 1.0, 0.85) + red * alpha


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """uint8, its longest side at most THUMBNAIL pixels (PIL's antialiased reduction)."""
    thumb = Image.fromarray(image if image.dtype == np.uint8 else _grey(image))
    thumb.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
    return np.asarray(thumb)


def _save(out_dir: str, relative: str, image: np.ndarray, fmt: str) -> str:
    """Write `image` (float in [0, 1] or uint8) as PNG or JPEG, atomically; returns `relative`."""
    array = image if image.dtype == np.uint8 else _grey(image)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    storage.write_bytes_atomic(os.path.join(out_dir, relative), buffer.getvalue())
    return relative


def _summary(run, config, workdir, folder, paths, not_images, records, skipped, abstain, mask, methods) -> dict:
    names = run.class_names
    classes = {}
    for record in records:
        if "class_name" in record:
            classes[record["class_name"]] = classes.get(record["class_name"], 0) + 1
    return {
        "workdir": photos.shown(workdir), "step": run.step, "model": run.kind, "config_name": config.name,
        "folder": photos.shown(os.path.abspath(folder)), "offers": list(methods),
        "class_names": names if "probabilities" in methods else None,
        "counts": {"photos_found": len(paths), "predicted": len(records), "skipped": len(skipped),
                   "abstained": sum(bool(r.get("abstained")) for r in records)},
        "classes": classes,
        "skipped": skipped,
        "not_images": not_images_seen(not_images),
        "abstain": abstain,
        "mask": mask,
        "photo_readout": PHOTO_READOUT,
        "tiles_photos": pipeline.tiles_photos(config), "tile_size": config.data.image_size,
        "versions": {"cfjax": __version__, "jax": jax.__version__},
    }


def not_images_seen(others: list[str], examples: int = 10) -> dict:
    """The files under the folder that were not read, for they are not of an image type cfjax reads (a HEIC
    photo, a RAW file, a note): said, so a photo missing from the table is not a mystery."""
    return {"count": len(others), "examples": [photos.shown(name) for name in others[:examples]],
            "read_types": list(files.IMAGE_EXTENSIONS)}


CSV_FIELDS = ("path", "width", "height", "tiles", "class", "class_name", "confidence", "uncertainty", "g_class",
              "p_fake", "abstained", "mask_area", "mask_threshold", "saliency", "mask", "overlay", "counterfactual")


def _write_tables(out_dir: str, records: list, run: RestoredRun, summary: dict) -> None:
    """predictions.csv (one row per photo; a column per class probability) and predictions.jsonl."""
    names = summary["class_names"] or []
    fields = CSV_FIELDS + tuple(f"p_{name}" for name in names)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        row = {**record, **record.get("files", {})}
        row.update({f"p_{name}": p for name, p in zip(names, record.get("probabilities", []))})
        writer.writerow(row)
    storage.write_text_atomic(os.path.join(out_dir, "predictions.csv"), buffer.getvalue())
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    storage.write_text_atomic(os.path.join(out_dir, "predictions.jsonl"), lines)
