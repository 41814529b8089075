"""pytest-xdist scheduling: cases that share model calls run on one worker.

A task and the tasks derived from it (e.g. ``morphology`` and
``morphology-merged``) score the same answers, so they belong to one group,
``<base task>-<model>-<prompt>``. With ``-n N`` (xdist's default ``load``
mode, or ``loadgroup``) the plugin swaps in a scheduler that hands each group
to a single worker; other tests are scheduled one by one, as ``load`` does.
This does not rely on xdist's ``@group`` node-id suffix (a no-op with pytest 9).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_PARAM = re.compile(r"\[([^\]]+)\](?:@[^\[\]]*)?$")


def share_group(case: Any) -> str:
    """The group of a case: base task, model and prompt."""
    return f"{case.task.derived_from or case.task.name}-{case.model.name}-{case.prompt}"


def make_scheduler(config: Any, log: Any, cases: Iterable[Any]) -> Any:
    """A LoadScope scheduler whose scope is the case's share group."""
    from xdist.scheduler import LoadScopeScheduling

    groups = {c.id: share_group(c) for c in cases}

    class CaseGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            m = _PARAM.search(nodeid)
            if m and m.group(1) in groups:
                return f"astrobench:{groups[m.group(1)]}"
            return nodeid

    return CaseGroupScheduling(config, log)
