"""Every runtime dependency is pinned, transitive ones included, and the pins are what is installed.

A pin missing here means the Docker image or a fresh CI install can pull a different release
than the one the tests ran with (and a pickle is only valid with the scikit-learn that wrote it).
"""
import re
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

from tests.servers import ROOT


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path) -> dict:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r"):
            continue
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: {line} is not an exact pin"
        found[canonical(requirement.name)] = specs[0].version
    return found


def test_runtime_requirements_pin_every_transitive_dependency_at_the_installed_version():
    pinned = pins(ROOT / "requirements.txt")
    for name, version in pinned.items():
        dist = distribution(name)
        assert dist.version == version, f"{name}: pinned {version}, installed {dist.version}"
        for spec in dist.requires or []:
            dependency = Requirement(spec)
            if dependency.marker is not None and not dependency.marker.evaluate({"extra": ""}):
                continue  # an optional extra or another platform's dependency
            assert canonical(dependency.name) in pinned, f"{name} needs {dependency.name}, which is not pinned"


def test_dev_requirements_are_exact_pins_of_what_is_installed():
    for name, version in pins(ROOT / "requirements-dev.txt").items():
        try:
            installed = distribution(name).version
        except PackageNotFoundError:
            raise AssertionError(f"{name} is pinned in requirements-dev.txt but not installed") from None
        assert installed == version, f"{name}: pinned {version}, installed {installed}"
