"""One grading run in its own process: papermill executes a graded notebook in a fresh kernel.

Usage (by grade.py): ``python -m helpers.labs.worker GRADED OUTPUT PARAMS_JSON STATUS_JSON
CELL_TIMEOUT_S``. Writes ``{"error": ...}`` to STATUS_JSON: empty when every cell finished,
else why execution stopped (a cell past its timeout, a dead kernel, ...). The executed
notebook is written to OUTPUT even when execution stopped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    graded, output, params_path, status_path, cell_timeout = argv
    import papermill

    error = ""
    try:
        papermill.execute_notebook(
            graded,
            output,
            parameters=json.loads(Path(params_path).read_text()),
            kernel_name="python3",
            execution_timeout=float(cell_timeout),
            progress_bar=False,
            log_output=False,
            start_timeout=60,
            cwd=str(Path(graded).parent),
        )
    except papermill.PapermillExecutionError as exc:
        error = f"a cell failed: {exc.ename}: {str(exc.evalue)[:300]}"
    except Exception as exc:  # noqa: BLE001 (the grader records any failure as this submission's error)
        name = type(exc).__name__
        if name == "CellTimeoutError":
            error = f"a cell ran past the {float(cell_timeout):g} s cell timeout"
        elif name == "DeadKernelError":
            error = "the kernel died (the submission crashed or killed it)"
        else:
            error = f"{name}: {str(exc)[:300]}"
    Path(status_path).write_text(json.dumps({"error": error}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
