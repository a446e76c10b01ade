"""The graded labs in ``labs/``: the notebook side (``kit``) and the instructor's tools.

Theory of operation. A lab is one notebook in ``labs/`` with the solutions and hidden tests
in it (the format: ``labs/README.md``, "Writing a lab"; the model: ``source.Lab``).
``release`` writes each learner's version (stubs, hidden tests reduced to their names,
parameters injected with papermill). ``grade`` grades a folder of submissions so that the
learner's code cannot reach the verdict:

* the learner's task cells run in a process of their own (``learner``), in a sandbox of
  user, PID, mount and network namespaces where the kernel allows it (``sandbox``);
* the tests run in a trusted process (``runner``) and call the learner's functions over a
  Unix socketpair, passing real sockets as file descriptors (``wire``, ``remote``); every
  verdict comes from what the trusted side observed, with inputs drawn from a secret;
* only the grader (``grade``) writes records and gradebooks (``books``, ``late``) and the
  feedback notebooks (``feedback``).

Layering: the lessons never import this package. Lab notebooks import only ``kit``
(standard library only), so this file imports nothing eagerly.
Command line: ``python -m helpers.labs --help``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab", "LabError", "find_labs", "load_lab"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import source

        return getattr(source, name)
    raise AttributeError(f"module 'helpers.labs' has no attribute {name!r}")
