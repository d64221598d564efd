"""`sessionize consume` without a broker."""

from __future__ import annotations

import pytest

from tests.unit.cli.helpers import assert_one_line_error, run_cli


def test_unknown_partner_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "consume", "--partner", "segment", "--bootstrap", "x:1")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "unknown partner 'segment'", "amplitude", "braze", "mixpanel")
