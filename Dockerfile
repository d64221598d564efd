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
# pipeline.schemas reads the JSON Schemas from the folder beside the package, which
# `pip install .` does not ship: put them where the installed package looks for them.
RUN pip install . \
    && cp -r schemas "$(cd / && python -c 'import pipeline.schemas as s; print(s.SCHEMA_DIR)')" \
    && cd / && rm -rf /src \
    && useradd --system --home-dir /var/lib/sessionize --create-home sessionize

USER sessionize
# The worker's Faust data dir (worker.data_dir) is relative to here unless configured.
WORKDIR /var/lib/sessionize

CMD ["sessionize", "worker", "--config", "/etc/sessionize/config.toml"]
