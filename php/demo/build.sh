#!/bin/sh
# The demo's "build": a stand-in for a real one (npm run build, a static site generator, ...).
# It prints one progress line per step for a few seconds, as a build would, and reports how
# far it has got in $CMESH_RUN_PROGRESS ("DONE/TOTAL message"), which the page shows as a bar.
#
#   build.sh STEPS [FAIL_AT]
#
# STEPS steps of 0.15 s each; with FAIL_AT > 0 the build breaks at that step: it prints a
# compiler-like error on stderr and exits 2. On SIGTERM (cmesh-run cancel, or --timeout) it
# says so and exits 143, as a shell would.
steps=${1:-24}
fail_at=${2:-0}

trap 'echo "build: got SIGTERM at step $i, stopping"; exit 143' TERM

i=0
echo "build: $steps steps, running as $(id -un) in $(pwd), pid $$"
i=1
while [ "$i" -le "$steps" ]; do
	echo "[$i/$steps] compiling src/module-$i.c"
	# How far it has got, for the page's progress bar (cmesh-run reads the last line).
	[ -n "${CMESH_RUN_PROGRESS:-}" ] && echo "$((i - 1))/$steps compiling src/module-$i.c" > "$CMESH_RUN_PROGRESS"
	if [ "$i" -eq "$fail_at" ]; then
		echo "src/module-$i.c:42:17: error: expected ';' before '}' token" >&2
		echo "build: failed at step $i of $steps" >&2
		exit 2
	fi
	sleep 0.15
	i=$((i + 1))
done
[ -n "${CMESH_RUN_PROGRESS:-}" ] && echo "$steps/$steps linked build/app" > "$CMESH_RUN_PROGRESS"
echo "linking build/app ... done"
echo "build: finished, $steps modules"
