"""Fixtures: a Flask app over the fake backend, and a real gunicorn server over the real SmolLM2 model."""
import atexit
import os
import shutil
import tempfile

import pytest

from harness.servers import REDIS_SERVER, running_redis, running_shim
from shim.app import create_app
from shim.config import Settings
from shim.router import Route, Router
from tests.fakes import FakeBackend
from tests.support import SEED_CONFIG

# Shims started by the tests keep their files (the SQLite response store) here, never in the user's own data dir.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="shim-test-data-")
atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], True)


@pytest.fixture
def fake():
    return FakeBackend()


@pytest.fixture
def client(fake):
    router = Router({"fake": fake}, [Route("fake-model", "fake", "fake-model"), Route("alias", "fake", "fake-model")])
    app = create_app(Settings(embedded_model=False, max_body_bytes=4096), router=router)
    return app.test_client()


@pytest.fixture(scope="session")
def shim_url():
    """A real shim (gunicorn, gevent worker, the embedded SmolLM2 model) on a free loopback port."""
    with running_shim(SEED_CONFIG) as url:
        yield url


def pytest_terminal_summary(terminalreporter):
    """Say how many hostile-input cases were thrown at shim."""
    from tests.support import HOSTILE_CASES as CASES
    if CASES["count"]:
        terminalreporter.write_line(f"hostile input: {CASES['count']} malformed or adversarial requests sent")


@pytest.fixture
def shim_url_with():
    """Start a real shim with the given TOML config; yields a function that returns its URL."""
    import contextlib
    with contextlib.ExitStack() as stack:
        yield lambda config: stack.enter_context(running_shim(config))


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server (Debian's package) on a free loopback port, for the whole session."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/dev.sh test installs it)")
    with running_redis() as url:
        yield url
