"""The chart's generated files match what the code generates (CRDs, operator RBAC), and the chart
lints. Real-API-server checks of the chart are in tests/k8s."""

import subprocess

from harness import REPO, binary

CHART = REPO / "charts" / "switchyard"


def test_chart_crds_match_generated():
    for f in sorted((REPO / "crds").glob("*.yaml")):
        assert (CHART / "crds" / f.name).read_text() == f.read_text(), (
            f"charts/switchyard/crds/{f.name} is out of date: cp crds/*.yaml charts/switchyard/crds/"
        )
    assert {p.name for p in (CHART / "crds").glob("*.yaml")} == {p.name for p in (REPO / "crds").glob("*.yaml")}


def test_chart_rbac_matches_the_operator():
    rules = subprocess.run([binary(), "operator-rbac"], capture_output=True, text=True, check=True).stdout
    assert (CHART / "rbac" / "operator-rules.yaml").read_text() == rules, (
        "charts/switchyard/rbac/operator-rules.yaml is out of date: "
        "switchyard operator-rbac > charts/switchyard/rbac/operator-rules.yaml"
    )
