#!/bin/bash
# make bench: side-by-side medians of whole commands, as a web request
# would run them, then the Go benchmarks. BENCH_N sets the runs per row.
set -eu
cd "$(dirname "$0")/.."
. scripts/services.sh
ensure_atd || { echo "bench: needs at and a running atd (run as root)" >&2; exit 1; }
trap stop_atd_if_started EXIT
N=${BENCH_N:-31}
bin=$PWD/cmesh-run
work=$(mktemp -d /tmp/cmesh-run-bench.XXXXXX)
trap 'rm -rf "$work"; stop_atd_if_started' EXIT

# usec CMD...: wall time of one run, in microseconds.
usec() {
	local s=${EPOCHREALTIME/./}
	"$@" >/dev/null 2>&1 </dev/null
	echo $((${EPOCHREALTIME/./} - s))
}
median() { sort -n | awk '{a[NR]=$1} END {printf "%.2f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)/1000}'; }

declare -A results
# measure NAME CMD...: N runs, median in ms.
measure() {
	local name=$1; shift
	local i
	for i in $(seq "$N"); do usec "$@"; done | median > "$work/$name"
	results[$name]=$(cat "$work/$name")
}
at_now() { echo true | env -i PATH=/usr/bin:/bin /usr/bin/at -M now; }

# Fill a state dir with n finished jobs, copies of one real job.
fill() {
	local dir=$1 n=$2
	local id
	id=$("$bin" --state-dir "$dir" schedule -- true)
	"$bin" --state-dir "$dir" wait --timeout 30s "$id" >/dev/null
	local rec out
	rec=$(cat "$dir/jobs/$id.json")
	python3 - "$dir" "$id" "$n" <<'PY'
import sys, os, json
d, id0, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rec = json.load(open(f"{d}/jobs/{id0}.json"))
out = open(f"{d}/jobs/{id0}.out", "rb").read()
for i in range(n - 1):
    nid = f"20200101-000000.{i:06d}-bench0"
    r = dict(rec, id=nid)
    json.dump(r, open(f"{d}/jobs/{nid}.json", "w"))
    open(f"{d}/jobs/{nid}.out", "wb").write(out)
PY
	echo "$id"
}

echo "filling state dirs (10 and 10,000 finished jobs)..."
small=$work/small; big=$work/big
id10=$(fill "$small" 10)
id10k=$(fill "$big" 10000)
sched=$work/sched

measure at_now at_now
measure schedule "$bin" --state-dir "$sched" schedule -- true
measure at_now2 at_now
measure status10 "$bin" --state-dir "$small" status "$id10"
measure status10k "$bin" --state-dir "$big" status "$id10k"
measure list10 "$bin" --state-dir "$small" list --limit 50
measure list10k "$bin" --state-dir "$big" list --limit 50
measure overview10k "$bin" --state-dir "$big" status

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
at_med=$(awk -v a="${results[at_now]}" -v b="${results[at_now2]}" 'BEGIN {printf "%.2f", (a+b)/2}')
echo
echo "median wall time of $N runs each, $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
echo
printf '| %-44s | %9s | %-30s |\n' "operation" "ms" "ratio"
printf '|%s|%s|%s|\n' "----------------------------------------------" "-----------" "--------------------------------"
printf '| %-44s | %9s | %-30s |\n' "echo true | at now" "$at_med" ""
printf '| %-44s | %9s | %-30s |\n' "cmesh-run schedule -- true" "${results[schedule]}" "$(ratio "${results[schedule]}" "$at_med") x at now"
printf '| %-44s | %9s | %-30s |\n' "cmesh-run status ID (10 jobs)" "${results[status10]}" ""
printf '| %-44s | %9s | %-30s |\n' "cmesh-run status ID (10,000 jobs)" "${results[status10k]}" "$(ratio "${results[status10k]}" "${results[status10]}") x with 10"
printf '| %-44s | %9s | %-30s |\n' "cmesh-run list --limit 50 (10 jobs)" "${results[list10]}" ""
printf '| %-44s | %9s | %-30s |\n' "cmesh-run list --limit 50 (10,000 jobs)" "${results[list10k]}" "$(ratio "${results[list10k]}" "${results[list10]}") x with 10"
printf '| %-44s | %9s | %-30s |\n' "cmesh-run status (overview, 10,000 jobs)" "${results[overview10k]}" ""
echo
echo "Go benchmarks (output reading):"
go test -run '^$' -bench . -benchmem ./status/ | grep -E '^Benchmark|^ok'
