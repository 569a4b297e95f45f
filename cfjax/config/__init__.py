"""A run's config after it is built: brought up to today's fields (`upgrade`), checked whole
(`validation`), and compared with the config a saved run was trained with (`compare`).

The default configs themselves live beside the config files, in configs/common.py."""

from cfjax.config.upgrade import upgrade_config

__all__ = ["upgrade_config"]
