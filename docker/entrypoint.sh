#!/bin/sh
# One command: `marketplace serve` applies the migrations (one migrator at a time,
# guarded by an advisory lock), then serves. create_app sets up the JSON logs itself.
set -eu
: "${DATABASE_URL:?DATABASE_URL is required in the container}"
if [ -z "${MARKETPLACE_JWT_SECRET:-}" ]; then
    echo "warning: MARKETPLACE_JWT_SECRET is unset; tokens will not be valid across containers" >&2
fi
find "${PROMETHEUS_MULTIPROC_DIR:?}" -type f -delete 2>/dev/null || true
# `serve` migrates first, then runs WEB_CONCURRENCY API processes, each accepting on
# its own SO_REUSEPORT socket so that the kernel spreads connections over them.
exec marketplace serve --host 0.0.0.0 --port 8000 --workers "${WEB_CONCURRENCY}"
