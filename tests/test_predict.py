"""`--mode=predict` on tiny runs trained here: a folder of generated photos of several formats, sizes and
names (a corrupt one, hidden and system files), resuming, each kind, the CLI without --config, the report."""

import argparse
import csv
import html.parser
import json
import os
import shutil
import subprocess
import sys
import urllib.parse

import baselines
import cracks
import numpy as np
import pytest
from conftest import experiment_script
from PIL import Image

import cfjax
from cfjax import train
from cfjax.data import pipeline
from cfjax.data.builders import files
from cfjax.errors import ConfigError, DataError
from cfjax.predict import photos
from cfjax.predict.abstain import abstain_rule, choose_threshold
from cfjax.predict.run import mask_rule, predict

READABLE = ("a.jpg", "grey.png", "exif_rotated.jpg", "sub/rgba.png", "sub/palette.bmp", "sub/cmyk.tiff",
            "sub/ünïcode dir/sixteen bit.tif", "sub/ünïcode dir/фото.webp", "sub/still.gif")
UNREADABLE = ("animated.gif", "corrupt.jpg", "dangling.jpg", "loop.jpg")  # 2 frames; no image; links to nothing


def make_photos(folder) -> None:
    """The readable photos above (grey, RGBA, palette, CMYK, 16-bit, EXIF-rotated, GIF, non-ASCII names), the
    unreadable files above, hidden and system files, and a text file."""
    os.makedirs(os.path.join(folder, "sub", "ünïcode dir"), exist_ok=True)
    os.makedirs(os.path.join(folder, ".hidden_dir"), exist_ok=True)
    rng = np.random.default_rng(0)

    def image(h, w):
        y, x = np.mgrid[:h, :w]
        grey = (128 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0) + rng.normal(0, 8, (h, w))).clip(0, 255)
        grey[h // 2:h // 2 + 3, :] = 30  # a dark line, crack-like
        return np.stack([grey, grey * 0.95, grey * 0.9], -1).astype(np.uint8)

    path = lambda name: os.path.join(folder, name)  # noqa: E731
    Image.fromarray(image(320, 480)).save(path("a.jpg"), quality=90)
    Image.fromarray(image(100, 70)).convert("L").save(path("grey.png"))
    Image.fromarray(image(64, 96)).convert("RGBA").save(path("sub/rgba.png"))
    Image.fromarray(image(50, 50)).convert("P").save(path("sub/palette.bmp"))
    Image.fromarray(image(90, 60)).convert("CMYK").save(path("sub/cmyk.tiff"))
    Image.fromarray(image(40, 80)[..., 0].astype(np.uint16) * 257).save(path("sub/ünïcode dir/sixteen bit.tif"))
    Image.fromarray(image(48, 48)).save(path("sub/ünïcode dir/фото.webp"))
    rotated = Image.fromarray(image(40, 60))
    exif = rotated.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: 40 wide, 60 tall
    rotated.save(path("exif_rotated.jpg"), exif=exif)
    Image.fromarray(image(30, 40)).convert("P").save(path("sub/still.gif"))
    frames = [Image.fromarray(image(30, 40)).convert("P") for _ in range(2)]
    frames[0].save(path("animated.gif"), save_all=True, append_images=frames[1:])
    with open(path("corrupt.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not a JPEG at all")
    os.symlink("loop.jpg", path("loop.jpg"))
    os.symlink("gone.jpg", path("dangling.jpg"))
    for name, data in ((".DS_Store", b"\0\0\0\1Bud1"), ("._a.jpg", b"\0\5\26\7"), ("Thumbs.db", b"\xd0\xcf"),
                       (".hidden_dir/b.jpg", b"hidden"), ("notes.txt", b"not a photo")):
        with open(path(name), "wb") as f:
            f.write(data)


def test_photos_are_listed_recursively_without_hidden_or_system_files(tmp_path):
    make_photos(tmp_path)
    found, others = photos.list_photos(str(tmp_path))
    assert set(found) == set(READABLE) | set(UNREADABLE)
    assert others == ["notes.txt"]
    keys = [photos.key(p) for p in found]
    assert len(set(keys)) == len(keys) and all(k.isascii() for k in keys)
    with pytest.raises(DataError, match="does not exist"):
        photos.list_photos(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no image files under .*1 other file"):
        photos.list_photos(str(tmp_path / "empty"))


def test_the_abstain_threshold_keeps_the_largest_coverage_that_halves_the_error():
    p_fake = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    wrong = np.array([0, 0, 0, 1, 0, 1, 1, 1], bool)  # error 0.5; kept error <= 0.25 up to 0.5 (1 of 5 = 0.2)
    threshold, rule, stats = choose_threshold(p_fake, wrong)
    assert threshold == 0.5 and stats["coverage"] == 5 / 8 and "half" in rule
    assert choose_threshold(p_fake, np.zeros(8, bool))[0] == 0.8  # no error: only stranger inputs abstain
    assert choose_threshold(p_fake, np.ones(8, bool))[0] is None  # nothing halves it
    ties = choose_threshold(np.array([0.1, 0.1, 0.9]), np.array([0, 1, 1], bool))
    assert ties[0] is None  # the tied 0.1s cannot be split: keeping one keeps both (error 0.5 > 1/3)


class _StubRun:
    """What `abstain_rule` reads of a run: its offers and two scores over the validation split."""

    kind, offers = "gan", ("probabilities", "p_fake")

    def __init__(self, probabilities, p_fake):
        self.probabilities, self.p_fake = (lambda images: probabilities), (lambda images: p_fake)


def test_auto_abstains_on_the_score_that_keeps_more_validation_images():
    config = cracks.get_config("tiny")
    labels = np.asarray(pipeline.evaluation_arrays(config, "validation")["label"])
    n = len(labels)
    wrong = np.arange(n) < n // 5  # a fifth wrong, each answered with little confidence
    predicted = np.where(wrong, 1 - labels, labels)
    confidence = np.where(wrong, 0.55, 0.95)
    probabilities = np.stack([np.where(predicted == 0, confidence, 1 - confidence),
                              np.where(predicted == 1, confidence, 1 - confidence)], -1)
    p_fake = np.where(wrong, 0.1, np.linspace(0.2, 0.9, n))  # ranks the errors lowest: the fruit detector's case
    rule = abstain_rule(_StubRun(probabilities, p_fake), config)
    assert rule["score"] == "uncertainty" and rule["threshold"] == pytest.approx(0.05)  # keeps every right answer
    assert rule["coverage"] == pytest.approx(1 - wrong.mean()) and rule["kept_error"] == 0.0
    assert rule["scores"]["p_fake"]["threshold"] is None and "chosen over p_fake" in rule["rule"]
    confident_errors = np.where(wrong, 0.99, np.linspace(0.6, 0.95, n))  # now the errors look surest...
    probabilities = np.stack([np.where(predicted == 0, confident_errors, 1 - confident_errors),
                              np.where(predicted == 1, confident_errors, 1 - confident_errors)], -1)
    p_fake_ranks_them = np.where(wrong, 0.9, 0.1)  # ... and p_fake ranks them strangest
    chosen = abstain_rule(_StubRun(probabilities, p_fake_ranks_them), config)
    assert chosen["score"] == "p_fake" and chosen["scores"]["uncertainty"]["coverage"] < chosen["coverage"]
    forced = abstain_rule(_StubRun(probabilities, p_fake), config, score="p_fake")
    assert forced["score"] == "p_fake" and forced["threshold"] is None and set(forced["scores"]) == {"p_fake"}
    given = abstain_rule(_StubRun(probabilities, p_fake), config, threshold=0.3)
    assert given == {"score": "p_fake", "threshold": 0.3, "rule": "given by --abstain_threshold"}


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.links, self.scripts, self.in_body = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody":
            self.in_body = True
        if tag == "tr" and self.in_body:
            self.rows.append(attrs)
        for name in ("href", "src"):
            if attrs.get(name) and tag in ("a", "img", "script", "link"):
                self.links.append(attrs[name])


def check_report(out_dir, count) -> _Page:
    page = _Page()
    page.feed((out_dir / "report.html").read_text(encoding="utf-8"))
    assert len(page.rows) == count
    for link in page.links:
        assert not urllib.parse.urlparse(link).scheme, f"{link}: the page must not reach the network"
        assert (out_dir / urllib.parse.unquote(link)).is_file(), link
    return page


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    config = cracks.get_config("tiny")
    workdir = str(tmp_path_factory.mktemp("gan"))
    train.train_and_evaluate(config, workdir)
    return config, workdir


@pytest.mark.slow
def test_predict_a_folder_of_photos_with_a_gan_run_and_resume(gan_run, tmp_path):
    config, workdir = gan_run
    folder, out = tmp_path / "photos", tmp_path / "out"
    make_photos(folder)
    summary = predict(config, workdir, str(folder), out_dir=str(out), progress=False)
    assert summary["counts"] == {"photos_found": 13, "predicted": 9, "skipped": 4,
                                 "abstained": summary["counts"]["abstained"]}
    reasons = {s["path"]: s["reason"] for s in summary["skipped"]}  # each named, with why: none stops the rest
    assert list(reasons) == list(UNREADABLE) and all(f"cannot read image {folder}" in r for r in reasons.values())
    assert "2 frames" in reasons["animated.gif"] and "symbolic links" in reasons["loop.jpg"]
    assert "No such file" in reasons["dangling.jpg"]
    assert summary["not_images"]["count"] == 1 and summary["not_images"]["examples"] == ["notes.txt"]
    assert summary["abstain"]["rule"] and "validation_error" in summary["abstain"]
    assert "Otsu" in summary["mask"]["rule"]
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["path"] for r in records} == set(READABLE)
    for record in records:
        shown = files.read_image(str(folder / record["path"]))  # as a viewer shows it: EXIF applied
        assert (record["height"], record["width"]) == shown.shape[:2]
        for name in ("saliency", "mask", "counterfactual", "overlay"):
            with Image.open(out / record["files"][name]) as image:
                assert image.size == (record["width"], record["height"])
        assert sum(record["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert 0 <= record["p_fake"] <= 1 and isinstance(record["abstained"], bool)
        assert record["g_class"] in (0, 1) and 0 <= record["mask_area"] <= 1
        score, threshold = summary["abstain"]["score"], summary["abstain"]["threshold"]
        assert 0 <= record["uncertainty"] <= 1 - 1 / 2  # a tile mean of 1 − the largest of 2 probabilities
        assert record["abstained"] == (threshold is not None and record[score] > threshold)
    exif = next(r for r in records if r["path"] == "exif_rotated.jpg")
    assert (exif["width"], exif["height"]) == (40, 60)
    with open(out / "predictions.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [r["path"] for r in records] and "p_crack" in rows[0]
    check_report(out, 9)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="not-images"' in page and "notes.txt" in page
    # Resuming: a run stopped after some photos (their records written, the tables not) completes the rest
    # and the tables, and computes nothing twice.
    for name in ("predictions.csv", "predictions.jsonl", "summary.json", "report.html"):
        (out / name).unlink()
    removed = sorted((out / "records").iterdir())[:3]
    for path in removed:
        path.unlink()
    kept_record = sorted((out / "records").iterdir())[3]  # as an older cfjax named the classes
    (out / "records" / kept_record.name).write_text(json.dumps({**json.loads(kept_record.read_text()),
                                                                "class_name": "1"}))
    again = predict(config, workdir, str(folder), out_dir=str(out), progress=False)
    assert again["resumed"] == 6 and again["counts"]["predicted"] == 9
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 9 and {json.loads(line)["class_name"] for line in lines} <= {"no_crack", "crack"}
    assert json.loads((out / "summary.json").read_text())["counts"]["predicted"] == 9
    # A photo replaced under the same name, or another abstain threshold, is predicted again, not served stale.
    replaced = next(name for name in READABLE if name.endswith(".png"))
    Image.fromarray(np.full((48, 72, 3), 200, np.uint8)).save(folder / replaced)
    changed = predict(config, workdir, str(folder), out_dir=str(out), progress=False)
    assert changed["resumed"] == 8
    record = next(r for r in map(json.loads, (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines())
                  if r["path"] == replaced)
    assert (record["width"], record["height"]) == (72, 48)
    rethresholded = predict(config, workdir, str(folder), out_dir=str(out), abstain_threshold=0.0, progress=False)
    assert rethresholded["resumed"] == 0 and rethresholded["counts"]["abstained"] == 9
    # a given threshold overrides the validation rule
    forced = predict(config, workdir, str(folder), out_dir=str(tmp_path / "forced"), abstain_threshold=0.0,
                     progress=False)
    assert forced["abstain"]["rule"] == "given by --abstain_threshold" and forced["counts"]["abstained"] == 9
    # a given saliency threshold draws every mask (here: none), and changing it predicts again
    unmasked = predict(config, workdir, str(folder), out_dir=str(out), saliency_threshold=1e9, progress=False)
    assert unmasked["resumed"] == 0
    assert unmasked["mask"] == {"threshold": 1e9, "rule": "1e+09, given by --saliency_threshold"}
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {(r["mask_threshold"], r["mask_area"]) for r in records} == {(1e9, 0.0)}


def test_a_given_saliency_threshold_needs_a_run_with_masks_and_a_finite_value():
    unet = argparse.Namespace(offers=("saliency", "mask"), kind="segmenter", mask_threshold=0.5, mask_rule="0.5")
    assert mask_rule(unet) == {"threshold": 0.5, "rule": "0.5"}
    assert mask_rule(unet, 0.25) == {"threshold": 0.25, "rule": "0.25, given by --saliency_threshold"}
    with pytest.raises(ConfigError, match="finite"):
        mask_rule(unet, float("nan"))
    classifier = argparse.Namespace(offers=("probabilities",), kind="classifier")
    assert mask_rule(classifier) is None
    with pytest.raises(ConfigError, match="a classifier run draws no masks"):
        mask_rule(classifier, 0.1)


@pytest.mark.slow
def test_file_names_that_are_not_utf8_are_predicted_and_shown_with_replacement_characters(gan_run, tmp_path):
    """A name with bytes that are not UTF-8 (possible on Linux) is read by its exact bytes, and shown, in every
    table and in the report, with U+FFFD where the bad bytes were: not a crash after the work is done."""
    config, workdir = gan_run
    folder = os.fsencode(str(tmp_path / "photos"))
    os.makedirs(folder)
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(os.path.join(folder, b"bad\xffname.png"), format="PNG")
    with open(os.path.join(folder, b"note\xfe.txt"), "wb") as f:
        f.write(b"not a photo")
    summary = predict(config, workdir, str(tmp_path / "photos"), out_dir=str(tmp_path / "out"), progress=False)
    assert summary["counts"]["predicted"] == 1 and summary["not_images"]["examples"] == ["note\ufffd.txt"]
    with open(tmp_path / "out" / "predictions.csv", encoding="utf-8", newline="") as f:
        assert [row["path"] for row in csv.DictReader(f)] == ["bad\ufffdname.png"]
    assert "bad\ufffdname.png" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    again = predict(config, workdir, str(tmp_path / "photos"), out_dir=str(tmp_path / "out"), progress=False)
    assert again["resumed"] == 1  # its record is found again under the name it is shown by


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(gan_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium here (apt-get install chromium); the report is still parsed above")
    config, workdir = gan_run
    folder, out = tmp_path / "photos", tmp_path / "out"
    make_photos(folder)
    predict(config, workdir, str(folder), out_dir=str(out), progress=False)
    shot = tmp_path / "report.png"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                           "--window-size=1400,1000", f"file://{out / 'report.html'}"],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # not a blank page
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          f"file://{out / 'report.html'}"], capture_output=True, text=True, timeout=120)
    assert '<b id="shown">9</b>' in dom.stdout  # the inline script ran and counted the shown rows


def _cli(args, repo_root):
    return subprocess.run([sys.executable, "-m", "cfjax.main", *args], cwd=repo_root, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("variant, has_classes, has_masks", [("classifier,tiny", True, False),
                                                             ("unet,tiny", False, True)])
def test_each_kind_predicts_what_it_offers_through_the_cli_without_config(tmp_path, repo_root, variant,
                                                                          has_classes, has_masks):
    workdir = tmp_path / "run"
    train.train_and_evaluate(baselines.get_config(variant), str(workdir))
    folder = tmp_path / "photos"
    make_photos(folder)
    proc = _cli(["--mode=predict", f"--workdir={workdir}", f"--folder={folder}"], repo_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = workdir / "predict_photos"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["predicted"] == 9
    assert "1 other file(s) not read" in proc.stdout and "notes.txt" in proc.stdout  # said, not silently dropped
    assert summary["abstain"]["score"] == ("uncertainty" if has_classes else None)  # a classifier abstains too
    record = json.loads((out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert ("abstained" in record) == has_classes
    assert ("probabilities" in record) == has_classes and ("mask_area" in record) == has_masks
    assert "counterfactual" not in record["files"] and "p_fake" not in record
    check_report(out, 9)


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_predict_errors_are_one_line(gan_run, tmp_path, repo_root):
    _, workdir = gan_run
    missing = _cli(["--mode=predict", f"--workdir={workdir}", f"--folder={tmp_path / 'nope'}"], repo_root)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _cli(["--mode=predict", f"--workdir={workdir}", f"--folder={tmp_path / 'empty'}"], repo_root)
    assert empty.returncode == 2 and "no image files under" in empty.stderr
    no_folder = _cli(["--mode=predict", f"--workdir={workdir}"], repo_root)
    assert no_folder.returncode == 2 and "needs --folder" in no_folder.stderr


@pytest.mark.slow
def test_the_throughput_benchmark_times_photos_of_each_size(gan_run, capsys):
    """experiments/predict_throughput.py drives `predict_photo` as predict does (a benchmark, not timed here)."""
    _, workdir = gan_run
    with experiment_script("predict_throughput") as throughput:
        throughput.time_photos(cfjax.restore(workdir), argparse.Namespace(sizes="40x24,100x70", count=1))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[1:]] == ["40x24", "100x70"] and "photos/s" in lines[-1]
