"""The part every cfjax builder shares: images and masks stored as PNG bytes, and a policy for
unreadable files."""

import tensorflow_datasets as tfds

from cfjax.data.builders import files


class ManualFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder over files the user placed in a manual folder; `skip_bad_files` skips and counts
    unreadable images instead of failing on the first."""

    def __init__(self, *, skip_bad_files: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.bad_files = files.BadFileCounter(skip_bad_files)
        self.mask_levels = files.MaskLevels()  # every mask read: prepare refuses a rule matching none or all

    def _image_mask_info(self, description: str, **features) -> tfds.core.DatasetInfo:
        """Image (RGB) and binary mask as PNG, which TFDS stores and decodes without TensorFlow."""
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                **features,
            }),
            supervised_keys=("image", "label"),
        )


