#!/bin/bash
# make demo: make sure atd runs, schedule a real job through at, show its
# status and live log, then its result.
set -eu
cd "$(dirname "$0")/.."
. scripts/services.sh
if ! ensure_atd; then
	echo "demo: at/atd is missing and could not be installed or started (run as root)" >&2
	exit 1
fi
state=$(mktemp -d /tmp/cmesh-run-demo.XXXXXX)
bin=$PWD/cmesh-run
echo "state dir: $state"
set -x
id=$("$bin" --state-dir "$state" schedule --name demo-build -- sh -c \
	'echo "building on $(hostname) as $USER"; for i in 1 2 3 4 5; do echo "step $i/5"; sleep 0.4; done; echo done')
"$bin" --state-dir "$state" status "$id"
"$bin" --state-dir "$state" log --follow "$id"
"$bin" --state-dir "$state" wait "$id"
"$bin" --state-dir "$state" status
