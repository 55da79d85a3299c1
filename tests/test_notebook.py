"""docs/quickstart.ipynb runs top to bottom in the core world (nbclient) and is kept without outputs; its
Reverb part runs in the Reverb world (tests/reverb_world/test_reverb_notebook.py)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the rlkit[notebook] extra; both locks have it
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "quickstart.ipynb"


def execute_notebook(notebook, directory: Path) -> str:
    """Run ``notebook``'s cells in a fresh kernel in ``directory``; the text they printed."""
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(directory)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    return "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.outputs)


def test_quickstart_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_quickstart_runs_top_to_bottom(tmp_path):
    text = execute_notebook(nbformat.read(NOTEBOOK, as_version=4), tmp_path)
    assert "final greedy return per seed" in text and "gymnasium CartPole returns" in text
    assert (tmp_path / "quickstart_episode.gif").stat().st_size > 0
    assert (tmp_path / "runs" / "quickstart-dqn" / "results.json").exists()
    assert "Reverb world only: bash scripts/run.sh reverb" in text  # the Reverb part says where it runs
