"""Shared fixtures: a model trained once per session into a temp dir, the app, the replay set."""
import pytest

from model.dataset import replay_records
from model.train import train
from tests.stack import Stack
from tests.versions import copy_version, train_worse
from webapp import create_app


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    train(path)
    return path


@pytest.fixture(scope="session")
def version_folders(model_dir, tmp_path_factory):
    """Three real versions of the example: 1.0.0 (the model), 1.0.1 (a copy of it under another version)
    and 2.0.0 (the same pipeline with 2 trees: several times worse), for deployment folders."""
    base = tmp_path_factory.mktemp("versions")
    return {"1.0.0": copy_version(model_dir, base / "current", "1.0.0"),
            "1.0.1": copy_version(model_dir, base / "copy", "1.0.1"),
            "2.0.0": train_worse(base / "worse", "2.0.0")}


@pytest.fixture(scope="session")
def app(model_dir):
    return create_app({"MODEL_DIR": str(model_dir), "TESTING": True})


@pytest.fixture(scope="session")
def card(app):
    return app.extensions["model_service"].card


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def replay():
    """[(record, actual_price)] for the 2009-2010 sales in sale order."""
    return replay_records()


@pytest.fixture
def record(replay):
    return dict(replay[0][0])


@pytest.fixture
def stack_for(model_dir, tmp_path):
    """A whole monitoring stack (tests/stack.py) of the example model per scenario asked, closed after the test."""
    stacks = []

    def make(scenario):
        stacks.append(Stack(model_dir, tmp_path, scenario))
        return stacks[-1]

    yield make
    for s in stacks:
        s.close()
