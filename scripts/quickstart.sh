#!/usr/bin/env bash
# Builds ultracloud and runs the single-node quickstart (`ultracloud up`) in
# the foreground. Extra arguments go to `ultracloud up`. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_go
echo "==> downloading Go modules"
go mod download
echo "==> building bin/ultracloud"
go build -o bin/ultracloud ./cmd/ultracloud
echo "==> starting: bin/ultracloud up $*"
exec ./bin/ultracloud up "$@"
