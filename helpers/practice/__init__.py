"""Practice: exercises a learner writes in a lesson, and checks that answer at once.

A lesson's exercise is a stub cell (tagged ``exercise``) and a check cell (tagged
``check``) with one call, ``h.practice.check("03", 1, writen)``, which runs the learner's
code against real sockets and says PASSED, NOT DONE YET or NOT YET, with what it saw and a
hint. ``h.practice.score("03")`` ends the lesson with "N of M exercises passed". Progress
is kept per user in a small JSON file (``store.py``) that ``passed_exercises()`` reads.

Layers: ``bounded`` runs learner code with a deadline; ``core`` holds the result, the
trial a check runs in and the registry; ``store`` keeps progress; ``lessonNN`` holds the
checks of lesson NN. Practice is not grading: nothing here imports ``helpers.labs``.
"""

from .bounded import Outcome, call_bounded
from .core import Exercise, Result, Score, Status, Trial, check, exercise, exercises, results, score
from .store import passed_exercises, progress_file

__all__ = [
    "Exercise",
    "Outcome",
    "Result",
    "Score",
    "Status",
    "Trial",
    "call_bounded",
    "check",
    "exercise",
    "exercises",
    "passed_exercises",
    "progress_file",
    "results",
    "score",
]
