#!/bin/sh
# Migrations first (one migrator at a time, guarded by an advisory lock), then
# the API with several workers. create_app sets up the JSON logs itself.
set -eu
: "${DATABASE_URL:?DATABASE_URL is required in the container}"
if [ -z "${MARKETPLACE_JWT_SECRET:-}" ]; then
    echo "warning: MARKETPLACE_JWT_SECRET is unset; tokens will not be valid across containers" >&2
fi
find "${PROMETHEUS_MULTIPROC_DIR:?}" -type f -delete 2>/dev/null || true
marketplace migrate
exec uvicorn app.main:create_app --factory \
    --host 0.0.0.0 --port 8000 \
    --workers "${WEB_CONCURRENCY}" \
    --proxy-headers --no-access-log
