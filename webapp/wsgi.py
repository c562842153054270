"""WSGI entry point: gunicorn -c webapp/gunicorn.conf.py webapp.wsgi:app

A broken or tampered model stops the server here with one line on stderr and
exit status 1, instead of a traceback per worker.
"""
import os
import sys

# one OpenMP thread per worker: N workers x M threads on 2 cores collapses throughput
os.environ.setdefault("OMP_NUM_THREADS", "1")

from model.card import ModelIntegrityError  # noqa: E402

from . import create_app  # noqa: E402

try:
    app = create_app()
except ModelIntegrityError as exc:
    print(f"webapp: refusing to start: {exc}", file=sys.stderr, flush=True)
    sys.exit(1)
