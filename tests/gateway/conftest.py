import pytest

from harness import Gateway, REPO


@pytest.fixture(scope="module")
def quickstart():
    """The gateway serving examples/quickstart, as the README starts it."""
    gw = Gateway(REPO / "examples" / "quickstart")
    yield gw
    gw.stop()


@pytest.fixture
def gateway_on(tmp_path):
    """Starts a gateway on a folder; stops it (and prints its log on failure) afterwards."""
    started = []

    def start(config_dir, **kw):
        gw = Gateway(config_dir, **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
        print(gw.output())
