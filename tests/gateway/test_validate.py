"""`switchyard validate`: what a GitOps pipeline runs before merge."""

import subprocess

from harness import REPO, binary, copy_example


def validate(path):
    return subprocess.run([binary(), "validate", str(path)], capture_output=True, text=True)


def test_examples_are_valid():
    for example in ["quickstart", "providers", "resilience", "limits"]:
        r = validate(REPO / "examples" / example)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "0 error(s)" in r.stdout


def test_route_naming_a_missing_provider(tmp_path):
    config = copy_example("quickstart", tmp_path)
    (config / "broken.yaml").write_text(
        """# A route whose provider does not exist.
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata:
  name: broken
  namespace: default
spec:
  model: broken
  backends:
    - providerRef:
        name: openai-missing
      model: gpt-4o
"""
    )
    r = validate(config)
    assert r.returncode == 1
    assert (
        f'{config}/broken.yaml:11: LLMRoute/broken: spec.backends[0].providerRef.name: '
        'Provider "openai-missing" not found in namespace "default"; the route is left out'
    ) in r.stdout, r.stdout
    # The other routes still compile.
    assert "2 route(s)" in r.stdout


def test_unknown_field_and_cel_rule(tmp_path):
    config = copy_example("quickstart", tmp_path)
    (config / "bad.yaml").write_text(
        """apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: claude}
spec:
  type: anthropic
  regoin: eu
"""
    )
    r = validate(config)
    assert r.returncode == 1
    assert f"{config}/bad.yaml:6: Provider/claude: spec.regoin: unknown field" in r.stdout, r.stdout
    assert f"{config}/bad.yaml:4: Provider/claude: spec: credentials.secretRef is required for this provider type" in r.stdout, r.stdout
