"""gunicorn settings, all from environment variables (see README: Configuration).

    gunicorn -c webapp/gunicorn.conf.py webapp.wsgi:app

This file runs in the master before the app is imported, which is why it prepares
the environment (OpenMP threads, the multiprocess metrics folder) and imports no
project module at the top: prometheus_client picks its multiprocess mode when first
imported, so PROMETHEUS_MULTIPROC_DIR must be set before anything imports it.
"""
import atexit
import importlib.util
import os
import shutil
import sys
import tempfile


def _load_settings():
    """webapp/config.py by its path: importing the webapp package here would import prometheus_client."""
    spec = importlib.util.spec_from_file_location("webapp_settings", os.path.join(os.path.dirname(__file__), "config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


settings = _load_settings()


def _remove_owned_dir(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


def _prepare_multiproc_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR, emptied (or a fresh temp folder when unset): stale files would add old counts."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.environ.get("WEBAPP_MULTIPROC_PREPARED_BY") == str(os.getpid()):
        # gunicorn reads this file again in the same master on SIGHUP (reload): the folder now
        # holds the counts of the workers being replaced, and emptying it would set every counter
        # back to 0 (and lose what the old workers count while finishing their last request)
        return path
    if not path:
        path = tempfile.mkdtemp(prefix="webapp-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        os.environ["WEBAPP_OWNS_MULTIPROC_DIR"] = "1"
        # on_exit only runs after a clean stop: a refused start (bad model, metrics port taken)
        # exits before it and left one temp folder behind per attempt. The pid check keeps
        # forked workers, which run atexit handlers too, from removing the master's folder.
        atexit.register(_remove_owned_dir, path, os.getpid())
    try:
        os.makedirs(path, exist_ok=True)
        for entry in os.listdir(path):
            if entry.endswith(".db"):
                os.remove(os.path.join(path, entry))
        probe = tempfile.NamedTemporaryFile(dir=path, suffix=".probe")
        probe.close()
    except OSError as exc:
        print(f"webapp: refusing to start: PROMETHEUS_MULTIPROC_DIR {path} is not a writable folder: "
              f"{exc.strerror or exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    os.environ["WEBAPP_MULTIPROC_PREPARED_BY"] = str(os.getpid())
    return path


# must be set before numpy/scikit-learn load OpenMP in the (preloaded) app
os.environ["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or "1"
METRICS_ENABLED = settings.metrics_enabled()
if METRICS_ENABLED:
    _prepare_multiproc_dir()
METRICS_HOST = os.environ.get("METRICS_HOST", "127.0.0.1")
METRICS_PORT = settings.env_int("METRICS_PORT", 9200)

bind = f"{os.environ.get('API_HOST', '127.0.0.1')}:{settings.env_int('API_PORT', 5000)}"
workers = settings.env_int("WORKERS", 2)
# gunicorn's sync worker (CPU-bound predictions: one request per worker at a time), with a deadline
# for headers, JSON error answers, and an exit when the master dies: see webapp/worker.py
worker_class = "webapp.worker.JsonSyncWorker"
settings.header_read_timeout()  # a bad value stops the start here, in one line, not in every worker
# load (and checksum) the model once in the master: a bad model stops startup at once,
# workers fork with the model already in memory, and a killed worker is replaced fast
preload_app = True
timeout = settings.gunicorn_timeout()  # kills a worker stuck on one request; the app's body deadline is half
graceful_timeout = settings.env_int("GUNICORN_GRACEFUL_TIMEOUT", 20, minimum=0)
keepalive = settings.env_int("GUNICORN_KEEPALIVE", 5, minimum=0)
# header limits: a request line or header block beyond these is refused with 4xx
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
control_socket_disable = True  # gunicorn 27's control socket is not needed and would live in $HOME
accesslog = os.environ.get("ACCESS_LOG") or None  # e.g. "-" for stdout
loglevel = os.environ.get("LOG_LEVEL", "info")


def when_ready(server):
    from webapp import other_version_lines, serving_line
    deployment = server.app.wsgi().extensions["deployment"]
    service = deployment.primary
    server.log.info("Serving model %s %s; %s", service.card["name"], service.version, serving_line(service))
    for line in other_version_lines(deployment):
        server.log.info("Serving %s", line)
    if not METRICS_ENABLED:
        return
    from webapp.metrics_server import start_metrics_server
    try:
        start_metrics_server(server, METRICS_HOST, METRICS_PORT)
    except OSError as exc:
        print(f"webapp: refusing to start: cannot serve metrics on {METRICS_HOST}:{METRICS_PORT}: "
              f"{exc.strerror or exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    server.log.info("Serving metrics on http://%s:%d/metrics", METRICS_HOST, METRICS_PORT)


def on_reload(server):
    # SIGHUP: preload_app keeps the app the master loaded, so the model is read again here, in
    # the master, before the new workers fork; a model that fails its checks is not served
    from webapp import reload_model
    reload_model(server.app.wsgi(), server.log)


def worker_exit(server, worker):
    # in the worker, as it leaves: metric updates a full folder refused get a last chance
    if METRICS_ENABLED:
        from webapp.metrics_store import flush
        flush(force=True)


def child_exit(server, worker):
    if METRICS_ENABLED:
        from webapp.metrics_server import worker_exited
        worker_exited(worker.pid)


def on_exit(server):
    if os.environ.get("WEBAPP_OWNS_MULTIPROC_DIR") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
