"""Nested dicts (configs, results) flattened to one level, for comparisons and scalar logs."""


def flatten_dict(tree: dict, sep: str = ".", prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1} (with `sep` between the levels)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_dict(value, sep, f"{prefix}{key}{sep}"))
        else:
            flat[prefix + key] = value
    return flat
