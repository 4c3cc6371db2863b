"""The 60-second soak (tests/soak/soak.py): two gateways sharing a redis-server in front of the
faulty mock provider. Every check of the soak must hold; a failure shows the per-key ledger table
and each failed check. `bench/soak.sh --minutes 10` runs the long version."""

import pytest

import soak


def test_soak_ledger_balances(tmp_path):
    res = soak.run(1.0, tmp_path)
    text = soak.report(res)
    (tmp_path / "soak.md").write_text(text)
    print(text)
    if res.problems:
        pytest.fail(text, pytrace=False)
