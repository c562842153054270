# One image for the `api` and `exporter` services of docker-compose.yml.
#   docker build -t ames-house-price .
# The model is trained here, at build time: a pickle is only valid with the scikit-learn that
# wrote it, so it must come from this image's pinned packages, never from the build context.
FROM python:3.11.14-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    API_HOST=0.0.0.0 \
    API_PORT=5000 \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9200

WORKDIR /app

# a user with no home and no shell; numeric USER below so that runAsNonRoot-style checks can verify it
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# training needs model/, data/ and webapp/ (the card is checked with the server's own start-up
# checks before it is written): a change to exporter/ keeps this layer cached
COPY data/ames.csv data/ames.csv
COPY model/ model/
COPY webapp/ webapp/
# gcc compiles the tree ensemble into a shared library (model/compiled.py), then leaves the image in the
# same layer: the library needs only libc and libm at run time
RUN if command -v gcc >/dev/null; then python -m model.train; \
    else apt-get update -qq \
        && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null \
        && python -m model.train \
        && apt-get purge -y -qq --auto-remove gcc libc6-dev >/dev/null \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && ls model/model-*.so

COPY exporter/ exporter/
# code and model stay root-owned: the app user can read them, never change them
RUN python -m compileall -q webapp exporter model

USER 10001:10001

# 5000 the API, 9200 its metrics (never published), 8000 the exporter's metrics
EXPOSE 5000 9200 8000

# as in the Makefile and Procfile; exec form, so gunicorn is PID 1 and gets SIGTERM
CMD ["gunicorn", "-c", "webapp/gunicorn.conf.py", "webapp.wsgi:app"]
