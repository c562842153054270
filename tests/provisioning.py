"""grafana/provisioning/*.yml as Grafana reads them: every $VAR or ${VAR} in a value filled in from
one environment (the compose service's, or scripts/grafana_local.py's). Grafana would make a
variable that is not set an empty string; here it is an error."""
import re

import yaml

from tests.servers import ROOT

PROVISIONING = ROOT / "grafana" / "provisioning"
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def expand(node, variables: dict):
    """node with the variables of every string value filled in (comments are not values)."""
    def value(match):
        name = match.group(1) or match.group(2)
        assert name in variables, f"${{{name}}} is not set by this environment"
        return variables[name]
    if isinstance(node, dict):
        return {key: expand(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [expand(value, variables) for value in node]
    return VARIABLE.sub(value, node) if isinstance(node, str) else node


def files() -> list:
    return sorted(PROVISIONING.rglob("*.yml"))


def variables_used() -> set:
    return {m.group(1) or m.group(2) for f in files()
            for text in strings(yaml.safe_load(f.read_text())) for m in VARIABLE.finditer(text)}


def provisioned(kind: str, variables: dict) -> list:
    """The datasources or the dashboard providers, with the variables filled in."""
    key = {"datasources": "datasources", "dashboards": "providers"}[kind]
    return [item for f in sorted((PROVISIONING / kind).glob("*.yml"))
            for item in expand(yaml.safe_load(f.read_text()), variables)[key]]
