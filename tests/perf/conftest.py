"""Shared machinery of the performance tests (pytest-benchmark).

Each timed test uses the ``benchmark`` fixture once and hands its stats to
:class:`PerfTargets` (the ``perf`` fixture). The ratio targets compare
timings of *different* tests (ours vs the floor, score vs generate), so they
are separate tests, defined after the tests they compare, that read those
stats back. When pytest-benchmark collects no timings (``--benchmark-disable``,
as ``make test`` passes, or under xdist) every timed test still runs its code
once, at toy size, and checks its answers; the ratio tests are then skipped.

``make perf`` runs this folder with timings; the terminal summary then lists
every ratio with its target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest


def benchmarking(config: pytest.Config) -> bool:
    """Whether pytest-benchmark times this session (its own verdict: option, xdist, --benchmark-skip)."""
    session = getattr(config, "_benchmarksession", None)
    if session is None:  # pragma: no cover - pytest-benchmark not installed or disabled with -p no:benchmark
        return False
    return not (session.disabled or session.skip)


@dataclass
class PerfTargets:
    """Stats of the timed tests, by name, and the ratios checked from them."""

    stats: dict[str, tuple[Any, int]] = field(default_factory=dict)  # name -> (Stats, items per round)
    lines: list[str] = field(default_factory=list)

    def keep(self, name: str, benchmark: Any, *, items: int) -> None:
        """Keep ``benchmark``'s stats under ``name``; ``items`` = answers or images per round."""
        benchmark.extra_info["items_per_round"] = items
        if benchmark.enabled and benchmark.stats is not None:
            self.stats[name] = (benchmark.stats.stats, items)

    def per_item(self, name: str) -> float:
        """Mean seconds per answer (or image) of the timed test ``name``."""
        stats, items = self.stats[name]
        return stats.mean / items

    def need(self, config: pytest.Config, *names: str) -> None:
        if not benchmarking(config):
            pytest.skip("no timings with --benchmark-disable or xdist: ratio checked by `make perf`")
        missing = [n for n in names if n not in self.stats]
        if missing:
            pytest.skip(f"timings of {missing} not collected in this run (deselected or failed)")

    def at_least(self, what: str, slow: str, fast: str, target: float) -> float:
        """Assert mean per-item time of ``slow`` / ``fast`` >= ``target``; return the ratio."""
        ratio = self.per_item(slow) / self.per_item(fast)
        ok = ratio >= target
        self.lines.append(f"{what:<48} {ratio:10.2f}x   target >= {target:g}x   {'met' if ok else 'MISSED'}")
        assert ok, (f"{what}: expected >= {target:g}x, found {ratio:.2f}x "
                    f"({slow}: {self.per_item(slow) * 1e6:.1f} us per item, "
                    f"{fast}: {self.per_item(fast) * 1e6:.1f} us per item)")
        return ratio

    def at_most(self, what: str, big: str, small: str, target: float) -> float:
        """Assert mean per-item time of ``big`` / ``small`` <= ``target``; return the ratio."""
        ratio = self.per_item(big) / self.per_item(small)
        ok = ratio <= target
        self.lines.append(f"{what:<48} {ratio:10.2f}x   target <= {target:g}x   {'met' if ok else 'MISSED'}")
        assert ok, (f"{what}: expected <= {target:g}x, found {ratio:.2f}x "
                    f"({big}: {self.per_item(big) * 1e6:.1f} us per item, "
                    f"{small}: {self.per_item(small) * 1e6:.1f} us per item)")
        return ratio

    def note(self, line: str) -> None:
        self.lines.append(line)


_TARGETS = PerfTargets()


@pytest.fixture(scope="session")
def perf() -> PerfTargets:
    return _TARGETS


@pytest.fixture(scope="session")
def timed(request: pytest.FixtureRequest) -> bool:
    """True when this session collects timings: the fixtures then build full-size inputs."""
    return benchmarking(request.config)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables
def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TARGETS.stats:
        terminalreporter.section("performance: mean time per answer or image")
        for name, (stats, items) in _TARGETS.stats.items():
            per = stats.mean / items
            terminalreporter.write_line(f"{name:<16} {per * 1e6:12,.1f} us {1 / per:12,.1f}/s   "
                                        f"({items} per round, {stats.rounds} rounds)")
    if _TARGETS.lines:
        terminalreporter.section("performance targets (ratios of mean time per answer or image)")
        for line in _TARGETS.lines:
            terminalreporter.write_line(line)
