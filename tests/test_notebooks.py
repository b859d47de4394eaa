"""Both notebooks execute on a tiny run (nbclient, the python3 kernel), and are committed without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _execute(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


def _text(cell) -> str:
    return "".join(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")) for out in cell.outputs)


@pytest.mark.parametrize("name", ["quickstart.ipynb", "inspect_run.ipynb"])
def test_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_quickstart_trains_looks_predicts_and_lists_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("QUICKSTART_OUT", str(tmp_path))
    monkeypatch.setenv("QUICKSTART_FAST", "1")
    notebook = _execute("quickstart.ipynb")
    text = "\n".join(_text(cell) for cell in notebook.cells if cell.cell_type == "code")
    assert "held-out test accuracy" in text and "on 500 images" in text
    assert "| class | precision | recall | F1 | support |" in text
    images = [out for cell in notebook.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) >= 3  # the history plot, the confusion matrix, the top losses
    assert (tmp_path / "runs" / "first" / "submission.csv").is_file()


@pytest.mark.slow  # trains a run and executes a notebook (~25 s)
def test_inspect_run_reads_a_run_folder(tmp_path, monkeypatch):
    from src.train import main
    from tests.helpers import TINY

    assert main([*TINY, "--arch", "resnet18", "--epochs", "2", "--output-dir", str(tmp_path), "--run-name", "r"]) == 0
    monkeypatch.setenv("INSPECT_RUN", str(tmp_path / "r"))
    notebook = _execute("inspect_run.ipynb")
    text = "\n".join(_text(cell) for cell in notebook.cells if cell.cell_type == "code")
    assert "'arch': 'resnet18'" in text and "valid_accuracy" in text and "finished" in text
