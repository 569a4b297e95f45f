"""The package's shape, checked: imports only go down the layers (data -> models -> masks / attacks ->
steps -> kinds -> train -> explain / attack / restore -> CLI), and every kind of run is one class that
offers what the rest of cfjax asks of it."""

import ast
import pathlib

import pytest

from cfjax import kinds
from cfjax.config import validation

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cfjax"

# Low to high; a module may import from its own layer or any lower one, never from a higher one.
LAYERS = (
    ("cfjax.errors", "cfjax.version", "cfjax.interrupts", "cfjax.cluster", "cfjax.host_memory"),
    ("cfjax.storage", "cfjax.workdir_lock"),
    ("cfjax.config.upgrade", "cfjax.config.compare", "cfjax.config", "cfjax.parallel", "cfjax.tiling",
     "cfjax.metric_writer", "cfjax.visualize", "cfjax.optim", "cfjax.losses", "cfjax.colab"),
    ("cfjax.data", "cfjax.models"),
    ("cfjax.masks", "cfjax.attacks"),
    ("cfjax.adversarial_training", "cfjax.steps", "cfjax.supervised", "cfjax.evaluate", "cfjax.checkpoint",
     "cfjax.config.validation"),
    ("cfjax.kinds",),
    ("cfjax.train", "cfjax.saved_runs", "cfjax.config.resolve"),
    ("cfjax.restored_run", "cfjax.explain", "cfjax.robustness", "cfjax.predict"),
    ("cfjax.main", "cfjax.cli", "cfjax.launch"),
)


def _layer(module: str) -> int:
    """The layer of the longest prefix of `module` that LAYERS names."""
    best, depth = None, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = index, name.count(".")
    assert best is not None, f"{module} is in no layer of LAYERS: place it"
    return best


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "cfjax":  # the root only imports `restored_run` lazily, for `cfjax.restore`
            yield name, path


def _imports(path: pathlib.Path, module: str):
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:  # `from cfjax import kinds` imports the module cfjax.kinds
                yield f"{base}.{alias.name}" if base == "cfjax" else base


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda value: str(value))
def test_imports_only_go_down_the_layers(module, path):
    own = _layer(module)
    upward = [target for target in _imports(path, module)
              if target.startswith("cfjax.") and _layer(target) > own]
    assert not upward, f"{module} (layer {own}) imports from higher layers: {upward}"


def test_every_config_model_is_one_kind_class():
    assert set(kinds.KINDS) == set(validation.MODELS)
    assert all(kind.name == name for name, kind in kinds.KINDS.items())


@pytest.mark.parametrize("config_name", ["cracks.py:tiny", "cracks.py:tiny,robust", "baselines.py:classifier,tiny",
                                         "baselines.py:unet,tiny"])
def test_each_kind_offers_what_restore_explain_and_attack_ask_of_it(config_name):
    """Built from its config (nothing compiled), a kind gives an inference function for every method it
    offers (masks come from its saliency), saliency methods, and readouts or a one-line refusal."""
    import baselines
    import cracks

    from cfjax import parallel
    from cfjax.errors import ConfigError

    module, arg = config_name.split(":")
    config = {"cracks.py": cracks, "baselines.py": baselines}[module].get_config(arg)
    kind = kinds.make_kind(config, parallel.make_mesh())
    assert kind.name == config.model
    functions = kind.inference_functions()
    assert set(functions) | ({"mask"} if "saliency" in functions else set()) == set(kind.offers)
    methods = kind.saliency_methods()
    assert methods.names and len(set(methods.names)) == len(methods.names)
    try:
        readouts = kind.readouts(kind.inference_params(dict.fromkeys(kind.inference_fields)))
    except ConfigError:
        readouts = []
    assert all(r.num_classes == config.num_classes for r in readouts)
    assert (kind.name == "segmenter") == (not readouts)
