"""A whole monitoring stack for end-to-end tests: webapp, exporter, Prometheus, Alertmanager, webhook.

The stack uses the shipped rules, Prometheus config and Alertmanager routing. Only timings
change: 1 s scrape and evaluation, every `for:` shortened to SHORT_FOR (expressions untouched),
Alertmanager's group waits at 1 s and every receiver pointed at the test's webhook.
"""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from tests.servers import ROOT, Alertmanager, Exporter, Gunicorn, Prometheus

SHORT_FOR = "2s"
# every alert's `dashboard` annotation: Grafana's base URL (Prometheus's external label grafana_url,
# empty when there is no Grafana) and a dashboard uid, the group
DASHBOARD_LINK = r"\{\{ with \$externalLabels\.grafana_url \}\}\{\{ \. \}\}/d/([\w-]+)\{\{ end \}\}"
# the base URL the stack's Prometheus is given: a local Grafana's, as make run sets it
GRAFANA_URL = "http://127.0.0.1:3000"
ARRIVAL_LIMIT = 180  # seconds: the bound the project sets for an alert to reach the receiver


class Webhook:
    """Collects Alertmanager's webhook posts: [(seconds since start, alert)]."""

    def __init__(self):
        self.start = time.monotonic()
        self.received = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                for alert in body["alerts"]:
                    hook.received.append((time.monotonic() - hook.start, alert))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def firing(self, alertname, **labels):
        return [(t, a) for t, a in self.received if a["status"] == "firing" and a["labels"]["alertname"] == alertname
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    def wait_for(self, alertname, timeout=ARRIVAL_LIMIT, **labels):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = self.firing(alertname, **labels)
            if hits:
                return hits[0]
            time.sleep(0.25)
        names = sorted({a["labels"]["alertname"] for _, a in self.received})
        raise AssertionError(f"{alertname} {labels} did not arrive within {timeout}s; received {names}")

    def close(self):
        self.server.shutdown()


def short_rules(tmp_path):
    """The shipped rule files with every `for:` at SHORT_FOR; nothing else changes."""
    paths = []
    for src in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        text = re.sub(r"(?m)^(\s+for:) \S+$", rf"\1 {SHORT_FOR}", src.read_text())
        dst = tmp_path / src.name
        dst.write_text(text)
        paths.append(dst)
    return paths


def alertmanager_config(tmp_path, webhook_url):
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())

    def fast(route):
        route.update({k: "1s" for k in ("group_wait", "group_interval") if k in route or route is config["route"]})
        for child in route.get("routes", []):
            fast(child)

    fast(config["route"])
    for receiver in config["receivers"]:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": False}]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def prometheus_config(tmp_path, rules, api_metrics_port, exporter_port, alertmanager_port):
    """prometheus.local.yml with the test's target files, the shortened rules and 1 s intervals."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.local.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s",
                        "external_labels": {"grafana_url": GRAFANA_URL}}
    config["rule_files"] = [str(r) for r in rules]
    ports = {"api": api_metrics_port, "exporter": exporter_port, "alertmanager": alertmanager_port, "prometheus": 1}
    targets = tmp_path / "targets"
    targets.mkdir()
    for job, port in ports.items():
        (targets / f"{job}.yml").write_text(f'- targets: ["127.0.0.1:{port}"]\n')
    for scrape in config["scrape_configs"]:
        scrape["file_sd_configs"] = [{"files": [str(targets / f"{scrape['job_name']}.yml")]}]
    config["alerting"]["alertmanagers"][0]["file_sd_configs"] = [{"files": [str(targets / "alertmanager.yml")]}]
    return yaml.safe_dump(config)


class Stack:
    def __init__(self, model_dir, tmp_path, scenario, exporter_args=()):
        self.webhook = Webhook()
        self.parts = []
        try:
            self._start(model_dir, tmp_path, scenario, exporter_args)
        except BaseException:
            self.close()  # what did start must not outlive a part that failed to
            raise

    def _start(self, model_dir, tmp_path, scenario, exporter_args):
        self.api = self._keep(Gunicorn(model_dir, workers=2))
        self.alertmanager = self._keep(Alertmanager(tmp_path, alertmanager_config(tmp_path, self.webhook.url)))
        self.exporter = self._keep(Exporter(self.api.url, "--rate", "100", "--loop", "--scenario", scenario,
                                            *exporter_args))
        self.prometheus = self._keep(Prometheus(
            tmp_path / "prometheus",
            config_text=prometheus_config(tmp_path, short_rules(tmp_path), self.api.metrics_port,
                                          self.exporter.port, self.alertmanager.port),
            extra_args=["--rules.alert.resend-delay=1s"]))

    def _keep(self, part):
        self.parts.append(part)
        return part

    def close(self):
        for part in reversed(self.parts):
            part.stop()
        self.webhook.close()
