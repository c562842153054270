"""gunicorn settings, all from environment variables (see README: Configuration).

    gunicorn -c webapp/gunicorn.conf.py webapp.wsgi:app
"""
import os

# must be set before numpy/scikit-learn load OpenMP in the (preloaded) app
os.environ["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or "1"

bind = f"{os.environ.get('API_HOST', '127.0.0.1')}:{os.environ.get('API_PORT', '5000')}"
workers = int(os.environ.get("WORKERS", "2"))
worker_class = "sync"  # CPU-bound predictions: one request per worker at a time
# load (and checksum) the model once in the master: a bad model stops startup at once,
# workers fork with the model already in memory, and a killed worker is replaced fast
preload_app = True
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))  # kills a worker stuck on one request
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# header limits: a request line or header block beyond these is refused with 4xx
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
control_socket_disable = True  # gunicorn 27's control socket is not needed and would live in $HOME
accesslog = os.environ.get("ACCESS_LOG") or None  # e.g. "-" for stdout
loglevel = os.environ.get("LOG_LEVEL", "info")
