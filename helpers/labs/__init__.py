"""Instructor tooling for the graded labs in ``labs/``: release student versions, grade submissions.

Theory of operation. A lab is one notebook in ``labs/`` with the solutions in it. Its cells
say what they are with cell tags (nbgrader's idea, without its database):

* ``parameters``: the papermill parameters cell (``seed = 0`` ...); exactly one per lab;
* ``solution``: a task cell; the lines between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` are the answer, and ``metadata.lab.task`` names the task;
* ``test``: a visible test the learner can run; ``metadata.lab`` = ``{"test": name,
  "points": n}``;
* ``hidden-test``: a test that runs only when graded, same metadata.

``release`` (``source.release_notebook``) replaces each solution with a stub that raises
NotImplementedError with a hint, drops the hidden tests, and injects the parameters
(per cohort or per student) with papermill. ``grade`` (``grade.grade_folder``) rebuilds
every submission from the pristine lab (the learner's task cells, our tests), runs it with
papermill in a fresh kernel in its own process under timeouts, and writes a gradebook CSV
and a feedback notebook per learner.

Layering: the lessons never import this package; it imports ``helpers`` like a lesson does.
Command line: ``python -m helpers.labs --help``.
"""

from __future__ import annotations

from .source import Lab, LabError, find_labs, load_lab

__all__ = ["Lab", "LabError", "find_labs", "load_lab"]
