"""The policy owners' workbench: what a bundle decides, and what a change would change.

Shared by the command line (``matrix``, ``diff``, ``decide --input``) and the web
console; every decision here goes through ``Decider.decide``, the path the
service uses, so the workbench shows exactly what the service would answer.

* :func:`matrix` - one row per action, collection method, status and situation;
* :func:`diff_matrices` - the cells two matrices answer differently;
* :func:`read_inputs` - recorded requests (a capture, or a directory of requests);
* :func:`replay` - recorded requests decided by two bundles, changes grouped;
* :class:`Capture` - writes the replayable capture (no patient data);
* :func:`rule_source` - a rule's file, line and YAML text.
"""

from server.workbench.capture import Capture, capture_entry, project
from server.workbench.inputs import InputError, InputRecord, read_inputs
from server.workbench.matrix import ANY, ERROR, CellChange, Matrix, MatrixRow, decision_rules, diff_matrices, matrix
from server.workbench.replay import Impact, ImpactGroup, answer, replay
from server.workbench.source import find_rule, rule_source

__all__ = [
    "ANY",
    "ERROR",
    "Capture",
    "CellChange",
    "Impact",
    "ImpactGroup",
    "InputError",
    "InputRecord",
    "Matrix",
    "MatrixRow",
    "answer",
    "capture_entry",
    "decision_rules",
    "diff_matrices",
    "find_rule",
    "matrix",
    "project",
    "read_inputs",
    "replay",
    "rule_source",
]
