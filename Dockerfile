# The streaming worker: `sessionize worker` reading /etc/sessionize/config.toml.
# Used by docker-compose.yml; build with `docker build -t sessionize .`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline/ pipeline/
COPY schemas/ schemas/
# The JSON Schemas ship inside the package (pipeline.schema_files, see pyproject.toml).
RUN pip install . \
    && cd / && rm -rf /src \
    && useradd --system --home-dir /var/lib/sessionize --create-home sessionize

USER sessionize
# The worker's Faust data dir (worker.data_dir) is relative to here unless configured.
WORKDIR /var/lib/sessionize

CMD ["sessionize", "worker", "--config", "/etc/sessionize/config.toml"]
