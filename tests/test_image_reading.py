"""Every file a user gives is read as a viewer shows it, or refused with one line naming it: the one
reader (`cfjax.data.builders.files`) behind `prepare` and `--mode=explain --folder`, on small images
of every mode, bit depth, orientation and mask colour, written here with PIL."""

import os

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from cfjax.data import prepare as prepare_lib
from cfjax.data import sources
from cfjax.data.builders import files
from cfjax.errors import DataError
from cfjax.explain import folder as folders


def _save(path, image, fmt=None, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return str(path)


def _stripe_mask(height=8, width=8, row=3):
    mask = np.zeros((height, width), np.uint8)
    mask[row] = 255
    return mask


# --- images ---------------------------------------------------------------------------------------------


def test_a_16_bit_grey_png_is_scaled_by_its_range_not_clipped_to_white(tmp_path):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], np.uint16)
    path = _save(tmp_path / "deep.png", Image.fromarray(values))
    assert Image.open(path).mode == "I;16"
    image = files.read_image(path)
    assert image.shape == (1, 4, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], [[0, 64, 128, 255]])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_32_bit_and_float_images(tmp_path):
    as_int = _save(tmp_path / "int.tif", Image.fromarray(np.array([[0, 65535]], np.int32)))
    np.testing.assert_array_equal(files.read_image(as_int)[..., 1], [[0, 255]])
    as_float = _save(tmp_path / "float.tif", Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)))
    np.testing.assert_array_equal(files.read_image(as_float)[..., 0], [[0, 128, 255]])
    beyond = _save(tmp_path / "beyond.tif", Image.fromarray(np.array([[0.0, 3.0]], np.float32)))
    with pytest.raises(DataError, match=r"beyond.tif: its floating-point values span \[0, 3\], not \[0, 1\]"):
        files.read_image(beyond)


def test_every_mode_becomes_the_rgb_a_viewer_shows(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [40, 80, 120]]], np.uint8)
    base = Image.fromarray(rgb)
    cases = {
        "rgb.png": base,
        "palette.png": base.convert("P", palette=Image.Palette.ADAPTIVE, colors=4),
        "cmyk.jpg": base.convert("CMYK"),
        "cmyk.tif": base.convert("CMYK"),
        "rgba_opaque.png": base.convert("RGBA"),
    }
    for name, image in cases.items():
        read = files.read_image(_save(tmp_path / name, image, quality=100) if name.endswith("jpg")
                                else _save(tmp_path / name, image))
        tolerance = 12 if name.endswith("jpg") else 0
        assert np.abs(read.astype(int) - rgb).max() <= tolerance, name
    grey = files.read_image(_save(tmp_path / "grey.png", Image.fromarray(np.array([[0, 77, 255]], np.uint8))))
    np.testing.assert_array_equal(grey, np.repeat(np.array([[0, 77, 255]])[..., None], 3, -1))
    bilevel = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    bilevel = files.read_image(_save(tmp_path / "one.png", bilevel))
    np.testing.assert_array_equal(bilevel[..., 0], [[0, 255]])


def test_a_gif_reads_as_shown_and_files_of_several_pictures_or_too_many_pixels_are_refused(tmp_path, monkeypatch):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [40, 80, 120]]], np.uint8)
    still = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    np.testing.assert_array_equal(files.read_image(_save(tmp_path / "still.gif", still)), rgb)
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]  # which one is "the" image: not ours to guess
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("animated.gif", "pages.tif"):
        with pytest.raises(DataError, match=rf"{name}: it holds 2 frames"):
            files.read_image(str(tmp_path / name))
    # Not pages: a camera's multi-picture JPEG (its preview) and a TIFF's reduced-resolution thumbnail.
    small = Image.fromarray(rgb).resize((2, 1))
    frames[0].save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[small], quality=100)
    with TiffImagePlugin.AppendingTiffWriter(str(tmp_path / "thumbnail.tif"), True) as tiff:
        frames[0].save(tiff)
        tiff.newFrame()
        reduced = TiffImagePlugin.ImageFileDirectory_v2()
        reduced[254] = 1  # NewSubfileType: a reduced-resolution copy of the image
        small.save(tiff, tiffinfo=reduced)
        tiff.newFrame()
    assert Image.open(tmp_path / "camera.jpg").n_frames == 2 and Image.open(tmp_path / "thumbnail.tif").n_frames == 2
    with Image.open(tmp_path / "camera.jpg") as shown:  # the first picture, as a viewer shows it
        np.testing.assert_array_equal(files.read_image(str(tmp_path / "camera.jpg")), np.asarray(shown.convert("RGB")))
    np.testing.assert_array_equal(files.read_image(str(tmp_path / "thumbnail.tif")), rgb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1)  # refused at 2x this, before any pixel is decoded
    with pytest.raises(DataError, match=r"still.gif: .*decompression bomb.*Cut it into smaller images"):
        files.read_image(str(tmp_path / "still.gif"))


def test_transparency_of_an_image_is_composited_on_white(tmp_path):
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [200, 0, 0, 255], [0, 0, 0, 128]]], np.uint8)
    read = files.read_image(_save(tmp_path / "a.png", Image.fromarray(rgba)))
    np.testing.assert_array_equal(read[0, :3], [[255, 255, 255], [0, 0, 0], [200, 0, 0]])
    assert abs(int(read[0, 3, 0]) - 127) <= 1
    la = files.read_image(_save(tmp_path / "la.png", Image.fromarray(np.array([[[10, 0], [10, 255]]], np.uint8), "LA")))
    np.testing.assert_array_equal(la[..., 0], [[255, 10]])
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 9, 9, 9] + [0] * 762)
    palette.info["transparency"] = 0  # index 0 (black) is transparent
    read = files.read_image(_save(tmp_path / "p.png", palette, transparency=0))
    np.testing.assert_array_equal(read[0], [[255, 255, 255], [9, 9, 9]])


def _exif_oriented(array, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return Image.fromarray(array), exif


@pytest.mark.parametrize("orientation, turn", [(6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1)),
                                               (3, lambda a: np.rot90(a, 2))])
def test_exif_orientation_is_applied_to_images_and_masks_alike(tmp_path, orientation, turn):
    stored = np.zeros((6, 10), np.uint8)
    stored[1, 1:4] = 255  # an asymmetric mark: a wrong orientation cannot match
    image, exif = _exif_oriented(np.repeat(stored[..., None], 3, -1), orientation)
    mask, mask_exif = _exif_oriented(stored, orientation)
    photo = files.read_image(_save(tmp_path / "photo.jpg", image, quality=100, exif=exif))
    drawn = files.read_binary_mask(_save(tmp_path / "mask.png", mask, exif=mask_exif), threshold=127,
                                   crack_value=None)
    assert photo.shape[:2] == drawn.shape == turn(stored).shape
    np.testing.assert_array_equal(photo[..., 0] > 127, turn(stored) > 0)
    np.testing.assert_array_equal(drawn, turn(stored) > 0)


# --- masks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", [(255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)])
def test_damage_is_any_colour_on_black(tmp_path, colour):
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[3] = colour
    read = files.read_binary_mask(_save(tmp_path / "m.png", Image.fromarray(mask)), threshold=127, crack_value=None)
    np.testing.assert_array_equal(read, _stripe_mask() > 0)


def test_cmyk_palette_16_bit_and_alpha_masks(tmp_path):
    expected = _stripe_mask() > 0
    white_on_black = Image.fromarray(_stripe_mask())
    cases = {
        "cmyk.tif": white_on_black.convert("RGB").convert("CMYK"),
        "palette.png": white_on_black.convert("P"),
        "deep.png": Image.fromarray(_stripe_mask().astype(np.uint16) * 257),
        "bilevel.png": white_on_black.convert("1"),
    }
    # Red strokes on a transparent layer (whatever colour hides under the transparent pixels).
    layer = np.zeros((8, 8, 4), np.uint8)
    layer[..., :3] = 255
    layer[3] = (255, 0, 0, 255)
    cases["layer.png"] = Image.fromarray(layer)
    for name, image in cases.items():
        read = files.read_binary_mask(_save(tmp_path / name, image), threshold=127, crack_value=None)
        np.testing.assert_array_equal(read, expected, err_msg=name)


def test_faint_16_bit_damage_is_not_read_as_background(tmp_path):
    zero_one = _save(tmp_path / "zero_one16.png", Image.fromarray((_stripe_mask() > 0).astype(np.uint16)))
    with pytest.raises(DataError, match="zero_one16.png has values up to 1 only, none above the threshold 127"):
        files.read_binary_mask(zero_one, threshold=127, crack_value=None)


def test_ambiguous_masks_are_refused_naming_the_file(tmp_path):
    inverted = _save(tmp_path / "inverted.png", Image.fromarray(255 - _stripe_mask()))
    with pytest.raises(DataError, match=r"inverted.png: 93% of its border is damage .*background must be black"):
        files.read_binary_mask(inverted, threshold=127, crack_value=None)
    shapes_in_alpha = np.zeros((8, 8, 4), np.uint8)
    shapes_in_alpha[3, :, 3] = 255  # black strokes, visible only through alpha
    path = _save(tmp_path / "alpha.png", Image.fromarray(shapes_in_alpha))
    with pytest.raises(DataError, match=r"alpha.png draws its shapes only in transparency"):
        files.read_binary_mask(path, threshold=127, crack_value=None)
    hidden = np.zeros((8, 8, 4), np.uint8)
    hidden[3, :, 0] = 255  # red under full transparency: a viewer shows nothing
    with pytest.raises(DataError, match=r"hidden.png is fully transparent but holds colour"):
        files.read_binary_mask(_save(tmp_path / "hidden.png", Image.fromarray(hidden)), threshold=127, crack_value=None)
    two_colours = np.zeros((8, 8, 3), np.uint8)
    two_colours[3] = (255, 0, 0)
    two_colours[5] = (0, 0, 255)  # red cracks, blue formwork: both level 255
    path = _save(tmp_path / "labels.png", Image.fromarray(two_colours))
    with pytest.raises(DataError, match=r"labels.png holds several colours at level 255"):
        files.read_binary_mask(path, threshold=None, crack_value=255)
    with pytest.raises(DataError, match=r"--mask_threshold=255: must be in \[0, 255\)"):
        files.read_binary_mask(path, threshold=255, crack_value=None)


def test_grey_label_maps_keep_their_crack_value(tmp_path):
    label_map = np.full((8, 8, 4), 255, np.uint8)
    label_map[..., :3] = 0
    label_map[3, :, :3] = 255  # crack
    label_map[5, :, :3] = 204  # formwork: background for crack_value=255
    read = files.read_binary_mask(_save(tmp_path / "l.png", Image.fromarray(label_map)), threshold=None,
                                  crack_value=255)
    np.testing.assert_array_equal(read, _stripe_mask() > 0)


# --- end to end: prepare and explain --folder read the same ------------------------------------------


def _user_folder(root, count=6, size=96):
    """Photos as users give them: a 16-bit grey PNG, phone JPEGs stored sideways with an EXIF
    orientation (masks drawn upright), RGB photos; masks drawn in green, red, white. Returns
    {stem: (upright image uint8 (H, W, 3) approximately, upright mask bool)}."""
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(count):
        height, width = size, size + 32  # not square: a sideways read cannot even match sizes
        image = rng.integers(90, 200, (height, width, 3), np.uint8)
        mask = np.zeros((height, width), bool)
        row = int(rng.integers(8, height - 8))
        image[row:row + 3] //= 3
        mask[row:row + 3] = True
        stem = f"p{i}"
        colour = [(0, 255, 0), (255, 0, 0), (255, 255, 255)][i % 3]
        drawn = np.zeros((height, width, 3), np.uint8)
        drawn[mask] = colour
        _save(root / "masks" / f"{stem}.png", Image.fromarray(drawn))
        if i % 3 == 0:  # 16-bit grey
            grey = image.mean(-1).astype(np.uint16) * 257
            _save(root / "images" / f"{stem}.png", Image.fromarray(grey))
            image = np.repeat((grey // 257).astype(np.uint8)[..., None], 3, -1)
        elif i % 3 == 1:  # stored sideways, EXIF says rotate 90 degrees clockwise to view
            stored, exif = _exif_oriented(np.ascontiguousarray(np.rot90(image, 1)), 6)
            _save(root / "images" / f"{stem}.jpg", stored, quality=95, exif=exif)
        else:
            _save(root / "images" / f"{stem}.png", Image.fromarray(image))
        expected[stem] = (image, mask)
    return expected


def test_prepare_and_explain_folder_read_users_files_as_a_viewer_shows_them(tmp_path):
    expected = _user_folder(tmp_path / "files")
    prepare_lib.prepare("crack_segmentation/folder", str(tmp_path / "files"), str(tmp_path / "data"))
    builder = sources.open_builder("crack_segmentation/folder", str(tmp_path / "data"))
    seen = set()
    for split in files.SPLITS:
        if split not in builder.info.splits:
            continue
        records = builder.as_data_source(split)
        for i in range(len(records)):
            record = records[i]
            stem = record["source"].decode()
            image, mask = expected[stem]
            assert record["label"] == 1, stem  # every photo holds a crack, whatever its mask's colour
            np.testing.assert_array_equal(record["mask"][..., 0] > 0, mask, err_msg=stem)
            assert record["image"].shape == image.shape, stem  # upright
            # Row by row as shown (JPEG blurs single pixels): not white, not clipped, the crack's rows dark.
            assert np.abs(record["image"].mean((1, 2)) - image.mean((1, 2))).max() < 3, stem
            seen.add(stem)
    assert seen == set(expected)
    for example in folders.load_pairs(str(tmp_path / "files")):
        image, mask = expected[example["name"]]
        np.testing.assert_array_equal(example["mask"], mask)
        assert np.abs(example["image"].mean((1, 2)) * 255 - image.mean((1, 2))).max() < 3


def test_a_crack_value_or_threshold_matching_no_pixel_or_every_pixel_is_refused(tmp_path):
    _user_folder(tmp_path / "files", count=3)
    with pytest.raises(DataError, match=r"--crack_value=1 matches no pixel of any mask in .*masks; "
                                        r"the masks hold the values 0, 255"):
        folders.load_pairs(str(tmp_path / "files"), crack_value=1)
    with pytest.raises(DataError, match=r"--crack_value=1 matches no pixel of any mask in .*files; "
                                        r"the masks hold the values 0, 255"):
        prepare_lib.prepare("crack_segmentation/folder", str(tmp_path / "files"), str(tmp_path / "data"),
                            overrides={"crack_value": 1})
    assert [p for p in os.listdir(tmp_path / "data") if p.startswith(".")] == []  # no scratch left
    with pytest.raises(DataError, match=r"--mask_threshold=-1: must be in \[0, 255\)"):
        folders.load_pairs(str(tmp_path / "files"), mask_threshold=-1)
    levels = files.MaskLevels()
    levels.add(np.full((2, 2), 9, np.uint8), np.ones((2, 2), bool))
    with pytest.raises(DataError, match=r"--mask_threshold=3 makes every pixel of every mask in F damage; "
                                        r"the masks hold the values 9"):
        levels.check("F", threshold=3, crack_value=None)
