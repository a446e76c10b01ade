"""Where a file a lesson names (a recording under ``recorded/``) is, from any edition's folder.

Theory of operation. A lesson names the files it reads relative to its own folder, the
English lessons' ``notebooks/`` (``h.capture.load_recording("recorded/02-tcp-handshake.json")``),
and JupyterLab starts a notebook's kernel in the notebook's folder. An edition in another
language (``notebooks/zh-CN/``, built by ``helpers.editions``) runs the very same code one
folder down, where ``recorded/`` does not exist. So every helper that reads such a file asks
``lesson_file()``: the path as given (from the working folder) when it exists there, else
the same path under the course's own ``notebooks/`` folder (beside this package, which
``./course`` and Binder install in editable mode). One copy of each recording serves every
edition; nothing is copied or linked.
"""

from __future__ import annotations

from pathlib import Path

#: The English lessons' folder: ``notebooks/`` beside the ``helpers`` package.
NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent.parent / "notebooks"


def lesson_file(path: str | Path) -> Path:
    """The file a lesson names by `path`: as given when it exists (an absolute path, or one
    relative to the working folder), else relative to the course's ``notebooks/`` folder.

    Raises TypeError for a `path` that is not a non-empty str or Path; FileNotFoundError
    naming every place looked at when the file is in neither.
    """
    if not isinstance(path, (str, Path)) or not str(path):
        raise TypeError(f"path must be a file name (str or pathlib.Path), got {path!r}")
    given = Path(path)
    if given.exists():
        return given
    if given.is_absolute():
        raise FileNotFoundError(f"no file {str(path)!r}")
    course = NOTEBOOKS_DIR / given
    if course.exists():
        return course
    raise FileNotFoundError(f"no file {str(path)!r}: looked in {Path.cwd()} (the working folder) and in "
                            f"{NOTEBOOKS_DIR} (the course's lessons)")
