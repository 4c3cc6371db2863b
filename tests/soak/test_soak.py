"""The 60-second soak (tests/soak/soak.py): two gateways sharing a redis-server in front of the
faulty mock provider. Every check of the soak is an assertion here; the failure message carries
the per-key table. `bench/soak.sh --minutes 10` runs the long version."""

import soak


def test_soak_ledger_balances(tmp_path):
    res = soak.run(1.0, tmp_path)
    assert not res.problems, soak.report(res)
