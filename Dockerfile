# syntax=docker/dockerfile:1
# Production image: DATABASE_URL is required (no embedded database in containers).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY app ./app
COPY services ./services
COPY migrations ./migrations
RUN pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MARKETPLACE_DATA_DIR=/var/lib/marketplace \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    WEB_CONCURRENCY=4
RUN groupadd --system app && useradd --system --gid app --home /var/lib/marketplace app \
    && mkdir -p /var/lib/marketplace /tmp/prometheus \
    && chown app:app /var/lib/marketplace /tmp/prometheus
COPY --from=build /opt/venv /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
