"""The notebooks in experiments/ run top to bottom on CPU with a tiny config (CFJAX_NOTEBOOK_TINY=1):
the training notebook trains and saves a run folder, the analysis notebook restores that copy and
draws everything. They are stored without outputs, so a diff shows code only."""

import json
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = ("colab_train.ipynb", "analysis.ipynb")


def _execute(path: pathlib.Path, cwd: pathlib.Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def _text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(value) for value in output.get("data", {}).values())
    return "\n".join(parts)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_stored_without_outputs(repo_root, name):
    notebook = json.loads((repo_root / "experiments" / name).read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(not cell["outputs"] and cell["execution_count"] is None for cell in code)


@pytest.mark.slow
@pytest.mark.subprocess
def test_training_then_analysis_notebook_run_top_to_bottom(repo_root, tmp_path, monkeypatch):
    workdir, saved = tmp_path / "runs" / "cracks_tiny", tmp_path / "drive"
    monkeypatch.setenv("CFJAX_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("CFJAX_NOTEBOOK_WORKDIR", str(workdir))
    monkeypatch.setenv("CFJAX_NOTEBOOK_SAVE_TO", str(saved))
    trained = _execute(repo_root / "experiments" / "colab_train.ipynb", repo_root)
    text = _text(trained)
    assert "cracks_tiny: batch 4 over 2 device(s)" in text and f"saved to {saved / 'cracks_tiny'}" in text
    assert (saved / "cracks_tiny" / "results.json").is_file() and any((saved / "cracks_tiny" / "checkpoints").iterdir())

    # The analysis notebook restores the saved copy, as it would from Drive on another machine.
    monkeypatch.setenv("CFJAX_NOTEBOOK_WORKDIR", str(saved / "cracks_tiny"))
    analysed = _execute(repo_root / "experiments" / "analysis.ipynb", repo_root)
    text = _text(analysed)
    assert "<cfjax run 'cracks_tiny' (gan) at step 6" in text
    assert "| counterfactual |" in text  # the IoU table
    assert "| D |" in text or "| D (" in text  # the robustness table
    images = [o for cell in analysed.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 4  # counterfactual grid, saliency panels, robustness curves, risk–coverage
    assert (saved / "cracks_tiny" / "attack" / "robustness.json").is_file()


def test_colab_helpers_scale_the_batch_and_refuse_an_untrained_folder(tiny_config, tmp_path):
    from cfjax import colab

    colab.scale_batch(tiny_config, per_device_batch=16, device_count=8)
    assert (tiny_config.batch_size, tiny_config.eval.batch_size) == (128, 128)
    with pytest.raises(ValueError, match="per_device_batch must be at least 1"):
        colab.scale_batch(tiny_config, 0)
    with pytest.raises(FileNotFoundError, match="holds no checkpoints: nothing to save"):
        colab.save_workdir(str(tmp_path / "empty"), str(tmp_path / "drive"))
    assert not (tmp_path / "drive").exists()
