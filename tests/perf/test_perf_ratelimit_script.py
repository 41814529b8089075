"""tests/perf/ratelimit_budget.py (throughput under a requests budget, the adaptive client
against the fixed one) runs at toy size: every row is printed, the adaptive client fails
no sample and scores the designed accuracy. Its throughput is printed, never asserted."""

from __future__ import annotations

from tests.perf import ratelimit_budget


def test_budget_script_runs_at_toy_size(capsys):
    assert ratelimit_budget.main(["--budget", "6", "--window", "0.3", "--requests", "20", "--latency", "0.02",
                                  "--concurrency", "8", "--servers", "headers,none"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("\nclient"):].strip().splitlines()
    assert table[0].split()[:4] == ["client", "server", "answers", "failed"]
    rows = [line.split("  ") for line in table[1:]]
    rows = [[c.strip() for c in r if c.strip()] for r in rows]
    assert [(r[0], r[1]) for r in rows] == [("before (fixed, client retries)", "headers"),
                                            ("after (adaptive)", "headers"),
                                            ("before (fixed, client retries)", "none"),
                                            ("after (adaptive)", "none")]
    for r in rows[1::2]:  # the adaptive client: every sample answered, the designed accuracy
        assert (r[2], r[3], r[-1]) == ("20", "0", "0.750")


def test_unknown_server_kind_is_refused(capsys):
    import pytest

    with pytest.raises(SystemExit):
        ratelimit_budget.parse_args(["--servers", "headers,weird"])
    assert "expected --servers from ['headers', 'retry-after', 'none', '429s-count'], found ['weird']" in capsys.readouterr().err
