"""Helpers shared by the partner formats (pipeline/partners/_common.py)."""

from __future__ import annotations

from pipeline.partners._common import Memo


def test_memo_computes_each_value_once():
    calls = []
    memo = Memo(lambda key: calls.append(key) or key.upper(), limit=10)
    assert [memo["a"], memo["b"], memo["a"]] == ["A", "B", "A"]
    assert calls == ["a", "b"]


def test_a_full_memo_starts_over_and_still_gives_right_values():
    memo = Memo(lambda key: key * 2, limit=3)
    values = [memo[n] for n in range(10)]
    assert values == [n * 2 for n in range(10)]
    assert len(memo) <= 3
