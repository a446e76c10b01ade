"""Release: write the student versions of labs, parameterised per cohort or per student.

For each lab and each student (or once for the whole cohort) this validates the
parameters, rewrites the lab (``Lab.student_notebook``: stubs in, hidden tests reduced to a
``kit.hidden(name, points)`` line) and lets papermill inject the parameters
(``parameterize_notebook`` adds the ``injected-parameters`` cell after the ``parameters``
cell and records them in ``metadata.papermill.parameters``). A ``manifest.json`` beside
the released files says who got which parameters, and the deadlines and late policy if
given, so grading can trust it over the submitted notebook.

With ``language`` (``--lang zh-CN``) the learner's text is that edition's: each lab's
markdown comes from its catalog ``i18n/<lang>/labs/<lab>.json`` (``helpers.editions``, the
same catalogs and checks as the lessons'), and everything else is released as in English.
Grading needs nothing of it: it matches a submission's task cells by their metadata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
from papermill.parameterize import parameterize_notebook

from .. import editions
from .late import parse_penalty, resolve_deadlines
from .source import Lab, LabError, derive_seed

__all__ = ["release", "STUDENT_NAME"]

#: A student's name becomes a folder name: keep it to safe characters.
STUDENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def release(
    labs: list[Lab],
    out_dir: Path,
    *,
    cohort: str = "cohort",
    students: list[str] | None = None,
    parameters: dict[str, str] | None = None,
    deadlines: dict[str, str] | None = None,
    late_penalty: str | None = None,
    language: str | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/<student or cohort>/<lab>.ipynb`` and ``out_dir/manifest.json``.

    Args:
        labs: the labs to release.
        cohort: names the cohort; with no `students`, the one folder it is released to.
        students: one release per student, each with its own seed (derived from the cohort
            and the name unless ``seed`` is given in `parameters`).
        parameters: ``name -> text`` from the command line (``-p seed=7``), parsed to the
            type of each lab's default; a lab without that parameter ignores it only if
            another lab in the release has it (else LabError).
        deadlines: ``lab id or number (or '*' for all) -> ISO time with offset``, kept in the
            manifest for grading; `late_penalty` likewise (``10%/day,max=50%``).
        language: an edition (``zh-CN``): the labs' markdown from its catalogs (``translated()``).
    Returns:
        The manifest: {"cohort", "released": {who: {lab id: parameters}}, "deadlines", ...}.
    """
    parameters = dict(parameters or {})
    if language is not None:
        labs = [translated(lab, language) for lab in labs]
    for who in [cohort, *(students or [])]:
        if not STUDENT_NAME.match(who):
            raise LabError(f"{who!r} cannot be a folder name: use letters, digits, '.', '_' or '-' (at most 64)")
    known = {name for lab in labs for name in lab.parameter_defaults}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise LabError(f"no lab here has parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    manifest: dict[str, Any] = {"cohort": cohort, "released": {}}
    if language is not None:
        manifest["language"] = language
    if deadlines:
        chosen = resolve_deadlines(deadlines, [lab.id for lab in labs])
        manifest["deadlines"] = {lab_id: when.isoformat() for lab_id, when in chosen.items()}
    if late_penalty:
        if not deadlines:
            raise LabError("a late penalty needs deadlines: give --deadline too")
        manifest["late_penalty"] = str(parse_penalty(late_penalty))
    for who in students or [cohort]:
        per_student = students is not None
        for lab in labs:
            defaults = lab.parameter_defaults
            given = {k: lab.parse_parameter_text(k, v) for k, v in parameters.items() if k in defaults}
            if "seed" in defaults and "seed" not in given:
                given["seed"] = derive_seed(cohort, who if per_student else "")
            values = lab.validate_parameters(given)
            released = {"cohort": cohort, "student": who if per_student else None}
            nb = parameterize_notebook(lab.student_notebook(released), values, kernel_name="python3", language="python")
            nb.metadata.get("papermill", {}).pop("input_path", None)
            target = out_dir / who / f"{lab.id}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)
            manifest["released"].setdefault(who, {})[lab.id] = values
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def translated(lab: Lab, language: str) -> Lab:
    """`lab` with its markdown in `language`, from ``i18n/<language>/labs/<lab>.json`` beside
    the labs' folder; LabError naming the catalog, the cells and the fix when it cannot be used."""
    try:
        nb = editions.translate(lab.nb, lab.path, language, root=lab.path.resolve().parent.parent)
    except (editions.EditionError, ValueError) as exc:
        raise LabError(f"{lab.id} cannot be released in {language}: {exc}") from exc
    return Lab(lab.path, nb)
