#!/usr/bin/env bash
# Runs tests/knowledge against a production-like MLflow: PostgreSQL as the
# backend store and an S3 API (moto's server mode) as the artifact store.
#
# PostgreSQL: uses the server on 127.0.0.1:5432 if it accepts the postgres
# user without a password; otherwise installs Debian's postgresql if needed
# and starts a private cluster in a temporary directory on a free port.
# Everything it starts or creates is removed on exit.
#
# Environment: PY, the Python of the virtual environment (default .venv/bin/python).
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
BIN="$(dirname "$PY")"
WORK="$(mktemp -d -t scanflow-mlflow-prod-XXXXXX)"
DB="scanflow_test_$$_$RANDOM"
PG_HOST=127.0.0.1
PG_PORT=5432
PG_DATA=""
MOTO_PID=""

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
    set +e
    if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null; wait "$MOTO_PID" 2>/dev/null; fi
    if [ -n "$PG_DATA" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
    else
        psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -qc "DROP DATABASE IF EXISTS $DB" >/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- PostgreSQL --------------------------------------------------------------
if command -v psql >/dev/null && psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -w -qtc 'select 1' >/dev/null 2>&1; then
    echo "using PostgreSQL on $PG_HOST:$PG_PORT"
else
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    PG_BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")"
    PG_PORT="$(free_port)"
    PG_DATA="$WORK/pgdata"
    mkdir -p "$PG_DATA" && chmod 755 "$WORK"
    [ "$(id -u)" = 0 ] && chown postgres "$PG_DATA"
    as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust >/dev/null
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -l "$PG_DATA/server.log" \
        -o "-c listen_addresses=$PG_HOST -p $PG_PORT -k $PG_DATA" start >/dev/null
    echo "started a private PostgreSQL on $PG_HOST:$PG_PORT"
fi
PSQL=(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -qv ON_ERROR_STOP=1)
command -v psql >/dev/null || PSQL=("$PG_BIN/psql" "${PSQL[@]:1}")
"${PSQL[@]}" -c "CREATE DATABASE $DB" >/dev/null

# --- S3 (moto's server mode) --------------------------------------------------
S3_PORT="$(free_port)"
"$BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
export MLFLOW_S3_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
"$PY" - <<'PYEOF'
import os, time, boto3, botocore.exceptions
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
for _ in range(100):
    try:
        s3.create_bucket(Bucket="scanflow-test")
        break
    except botocore.exceptions.EndpointConnectionError:
        time.sleep(0.1)
else:
    raise SystemExit("moto server did not start")
PYEOF

# --- Tests ---------------------------------------------------------------------
export SCANFLOW_TEST_MLFLOW_BACKEND="postgresql+psycopg2://postgres@$PG_HOST:$PG_PORT/$DB"
export SCANFLOW_TEST_MLFLOW_ARTIFACTS="s3://scanflow-test/artifacts"
"$BIN/pytest" tests/knowledge -q "$@"
