import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lam import BIN_DIR, LAYER, LocalLambda  # noqa: E402
from xray.daemon import DaemonListener  # noqa: E402
from xray.moto_xray import MotoXRay  # noqa: E402

for path, what in [(os.path.join(BIN_DIR, "local-lambda"), "the local Lambda"),
                   (os.path.join(LAYER, "extensions", "otel-xray"), "the layer's extension")]:
    if not os.path.exists(path):
        raise RuntimeError("%s is missing (%s): run `make local-layer` (or `make test`)" % (path, what))


@pytest.fixture
def log_dir(tmp_path):
    return str(tmp_path)


@pytest.fixture
def daemon():
    d = DaemonListener()
    yield d
    d.close()
    assert not d.errors, "the daemon stand-in received malformed datagrams: %s" % d.errors


@pytest.fixture(scope="session")
def moto():
    m = MotoXRay(tempfile.mkdtemp(prefix="moto-"))
    yield m
    m.close()


@pytest.fixture
def sandbox(log_dir):
    """Factory: sandbox(runtime_cmd, env=..., ...) -> LocalLambda, closed after the test."""
    made = []

    def make(runtime_cmd, **kwargs):
        lam = LocalLambda(log_dir, runtime_cmd, **kwargs)
        made.append(lam)
        return lam

    yield make
    for lam in made:
        lam.close()
