"""Pytest fixtures for the real control plane (see controlplane.py)."""

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from controlplane import ControlPlane  # noqa: E402


@pytest.fixture(scope="session")
def control_plane(request):
    """One control plane (with kube-controller-manager) per test session.

    Builds the binaries with build.sh first if they are missing (slow the first time).
    Logs are kept, and their directory printed, when any test failed.
    """
    cp = ControlPlane(controller_manager=True)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop(keep_logs=cp.keep_logs or request.session.testsfailed > 0)


@pytest.fixture
def namespace(control_plane):
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name, check=True)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")
