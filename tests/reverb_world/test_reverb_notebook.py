"""The quickstart notebook's Reverb part, DQN through an in-process Reverb server, run in the Reverb world
after the notebook's first cell (its imports); the rest of the notebook runs in the core world."""

import pytest
from test_notebook import NOTEBOOK, execute_notebook, nbformat

pytestmark = pytest.mark.reverb

REVERB_HEADING = "## DQN through Reverb"


def test_quickstart_reverb_part_runs_after_the_first_cell(tmp_path, reverb_module):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    start = next(i for i, cell in enumerate(notebook.cells) if cell.source.startswith(REVERB_HEADING))
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    notebook.cells = [first_code, *notebook.cells[start:]]
    text = execute_notebook(notebook, tmp_path)
    assert "Reverb world only" not in text, text
    assert "updates" in text and "greedy return" in text, text
