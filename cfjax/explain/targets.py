"""Cross-source evaluation: a trained run explained on another prepared dataset's test split, with no
retuning there. The maps are scored on the target, but every threshold comes from the run's own
validation split, so a number says how the run transfers, not how well it can be refitted."""


import ml_collections

from cfjax.data import pipeline, sources
from cfjax.errors import DataError


def target_config(config: ml_collections.ConfigDict, target: str, split: str = "test") -> ml_collections.ConfigDict:
    """The run's config reading `target`'s splits; DataError (one line, naming --eval_data) when the target
    cannot be read as the run was trained: other classes, other channels, or for a run trained on patches,
    patches of another size (resized, they would show cracks at a scale the run never saw)."""
    flag = f"--eval_data={target}"
    if not target.strip():
        raise DataError(f"{flag}: name a prepared dataset, e.g. crack_segmentation/uav75")
    config_for_target = sources.with_dataset(config, target)
    try:
        theirs = sources.open_split(config_for_target, split)
        ours = sources.open_split(config, "validation")
    except DataError as error:
        raise DataError(f"{flag}: {error}") from error
    if theirs.class_names != ours.class_names:
        raise DataError(f"{flag}: its classes {theirs.class_names} are not the run's {ours.class_names} "
                        f"({config.data.name})")
    their_shape, our_shape = _image_shape(theirs), _image_shape(ours)
    if their_shape[-1] != our_shape[-1]:
        raise DataError(f"{flag}: its images have {their_shape[-1]} channels, the run's ({config.data.name}) "
                        f"{our_shape[-1]}")
    if pipeline.tiles_photos(config) and their_shape != our_shape:
        raise DataError(f"{flag}: its {split} patches are {_size(their_shape)} px, the run was trained on "
                        f"{_size(our_shape)} px patches of {config.data.name}; prepare the target with "
                        f"--patch_size={our_shape[0]}")
    return config_for_target


def _image_shape(split: sources.SplitSource) -> tuple:
    if not len(split):
        return ()
    return tuple(split.examples[0]["image"].shape)


def _size(shape: tuple) -> str:
    return "x".join(str(n) for n in shape[:2])
