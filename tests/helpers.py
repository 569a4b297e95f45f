"""Shared set-up for tests that drive the GAN step directly."""

import jax

from cfjax import parallel, steps
from cfjax.data import synthetic


def fresh_state_and_batch(config, devices=None):
    """(mesh, models, initial state, one host batch of the synthetic train split) for `config`."""
    mesh = parallel.make_mesh(devices)
    models = steps.build_gan_models(config)
    state = steps.make_init_fn(models, config, mesh)(jax.random.PRNGKey(config.seed))
    data = synthetic.generate_split("train", config.batch_size, image_size=config.data.image_size,
                                    num_classes=config.num_classes)
    return mesh, models, state, {"image": data["image"], "label": data["label"]}
