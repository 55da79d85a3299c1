"""docs/quickstart.ipynb runs top to bottom in this world (nbclient), and is kept without outputs."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the rlkit[notebook] extra; both locks have it
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "quickstart.ipynb"


def test_quickstart_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.both_worlds  # its last part, DQN through Reverb, runs only in the Reverb world
def test_quickstart_runs_top_to_bottom(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.outputs)
    assert "final greedy return per seed" in text and "gymnasium CartPole returns" in text
    assert (tmp_path / "quickstart_episode.gif").stat().st_size > 0
    assert (tmp_path / "runs" / "quickstart-dqn" / "results.json").exists()
