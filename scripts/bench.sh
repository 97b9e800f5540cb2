#!/bin/bash
# make bench: see scripts/bench.py. Needs root for atd; installs nq and
# task-spooler to measure them alongside when it can.
set -eu
cd "$(dirname "$0")/.."
. scripts/services.sh
ensure_atd || { echo "bench: needs at and a running atd (run as root)" >&2; exit 1; }
trap stop_atd_if_started EXIT
need_pkgs /usr/bin/time time || { echo "bench: needs GNU time for peak RSS" >&2; exit 1; }
need_pkgs nq nq tsp task-spooler || echo "nq or task-spooler not installable: their rows are left out"
python3 scripts/bench.py
echo
echo "Go benchmarks (output reading):"
go test -run '^$' -bench . -benchmem ./status/ | grep -E '^Benchmark|^ok'
