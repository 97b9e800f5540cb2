#!/bin/bash
# make test: every check and suite. Installs and starts what it needs when
# root; prints a loud SKIP line for each suite it cannot run. With
# CMESH_RUN_REQUIRE_INTEGRATION=1 a skipped suite is a failure.
set -u
cd "$(dirname "$0")/.."
. scripts/services.sh
export PATH=$PATH:/usr/local/go/bin

failed=()
skipped=()
passed=0
step() { echo; echo "=== $*"; }
run() { local name=$1; shift; step "$name"; if "$@"; then echo "--- ok: $name"; passed=$((passed + 1)); else echo "--- FAIL: $name"; failed+=("$name"); fi; }
skip() { echo; echo "!!!!!!!! SKIP: $1: $2 !!!!!!!!"; skipped+=("$1"); }

gofmt_clean() { local out; out=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); [ -z "$out" ] || { echo "gofmt would change: $out"; return 1; }; }
run "gofmt" gofmt_clean
run "go vet" go vet ./... 
run "go vet (integration)" go vet -tags integration ./...
run "unit tests (race)" go test -race -count=1 ./...
# Fuzz budgets are counts of executions, not durations: Go 1.26's fuzzing
# coordinator can report "context deadline exceeded" as a failure when a
# -fuzztime duration ends while a worker is busy (go.dev/issue/75804); a
# count has no deadline to race. Each is about 10 s on this kind of machine.
run "fuzz: quoting round trip" go test -run '^$' -fuzz '^FuzzQuote$' -fuzztime 4000x -timeout 5m ./backend
run "fuzz: marker parsing" go test -run '^$' -fuzz '^FuzzOutputRead$' -fuzztime 6000x -timeout 5m ./status
run "fuzz: --command splitting" go test -run '^$' -fuzz '^FuzzCommandSplit$' -fuzztime 15000x -timeout 5m ./backend
run "fuzz: config parsing" go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 100000x -timeout 5m ./config
run "fuzz: ID and name patterns" go test -run '^$' -fuzz '^FuzzIDAndNameMatchSpec$' -fuzztime 150000x -timeout 5m ./status
run "build" make -s build

man_check() {
	./cmesh-run _man | diff -u man/cmesh-run.1 - || { echo "man/cmesh-run.1 is stale: run make man"; return 1; }
	if need_pkgs mandoc mandoc; then
		mandoc -T lint -W warning man/cmesh-run.1 || return 1
		[ -z "$(mandoc -T lint -W warning man/cmesh-run.1 2>&1)" ] || return 1
	else
		echo "mandoc missing; groff only"
	fi
	[ -z "$(groff -man -ww -z man/cmesh-run.1 2>&1)" ] || { groff -man -ww -z man/cmesh-run.1; return 1; }
}
run "man page" man_check

export CMESH_RUN_BIN=$PWD/cmesh-run
# Everything the integration suites use, installed at once when missing.
step "packages"
need_pkgs /usr/bin/at at php-fpm8.2 php-fpm /usr/bin/php php-cli cgi-fcgi libfcgi-bin \
	sudo sudo supervisord supervisor systemd-nspawn systemd-container mandoc mandoc \
	nginx nginx chromium chromium chromedriver chromium-driver man man-db systemctl systemd \
	/usr/sbin/munged munge /usr/sbin/slurmctld slurmctld /usr/sbin/slurmd slurmd /usr/bin/sbatch slurm-client ||
	echo "!!!!!!!! could not install every package (not root, or no mirror); suites that need them will SKIP !!!!!!!!"
if ensure_atd; then
	run "integration: at" go test -tags integration -count=1 -timeout 20m -v ./test/integration/ 
	# Every command the README shows, run against the real atd.
	run "integration: README" go test -tags integration -count=1 -timeout 15m -v ./test/readme/
	if need_pkgs php-fpm8.2 php-fpm /usr/bin/php php-cli cgi-fcgi libfcgi-bin && [ -d test/fpm ]; then
		run "integration: php-fpm" go test -tags integration -count=1 -timeout 20m -v ./test/fpm/
	else
		skip "integration: php-fpm" "php-fpm, php-cli or cgi-fcgi missing and not installable"
	fi
	# Sudo as a dedicated user, from a real PHP-FPM request.
	if [ -d test/sudo ] && need_pkgs sudo sudo php-fpm8.2 php-fpm cgi-fcgi libfcgi-bin; then
		run "integration: sudo" go test -tags integration -count=1 -timeout 10m -v ./test/sudo/
	elif [ -d test/sudo ]; then
		skip "integration: sudo" "sudo or php-fpm missing and not installable"
	fi
	# The spool and direct backends: exec-less PHP, a worker under supervisord.
	if [ -d test/spool ] && need_pkgs supervisord supervisor php-fpm8.2 php-fpm cgi-fcgi libfcgi-bin; then
		run "integration: spool and direct" go test -tags integration -count=1 -timeout 10m -v ./test/spool/
	elif [ -d test/spool ]; then
		skip "integration: spool and direct" "supervisor or php-fpm missing and not installable"
	fi
	# The demo page in a real browser: nginx, php-fpm, headless Chromium.
	if [ -d test/browser ] && need_pkgs nginx nginx chromium chromium chromedriver chromium-driver php-fpm8.2 php-fpm; then
		run "integration: demo page in a browser" go test -tags integration -count=1 -timeout 10m -v ./test/browser/
	elif [ -d test/browser ]; then
		skip "integration: demo page in a browser" "nginx, chromium or chromium-driver missing and not installable"
	fi
	# A real systemd in a container: jobs survive systemctl restart php8.2-fpm.
	if need_pkgs systemd-nspawn systemd-container php-fpm8.2 php-fpm cgi-fcgi libfcgi-bin; then
		run "integration: systemd container" go test -tags integration -count=1 -timeout 10m -v ./test/systemd/
	else
		skip "integration: systemd container" "systemd-container or php-fpm missing and not installable"
	fi
else
	skip "integration: at" "at/atd missing and not installable (not root?)"
	skip "integration: README" "needs atd"
	skip "integration: php-fpm" "needs atd"
	skip "integration: systemd container" "needs at"
	skip "integration: sudo" "needs at"
	skip "integration: spool and direct" "needs at"
	skip "integration: demo page in a browser" "needs at"
fi
stop_atd_if_started
# A real two-node Slurm cluster on loopback (munged, slurmctld, two slurmd in namespaces).
if need_pkgs /usr/sbin/munged munge /usr/sbin/slurmctld slurmctld /usr/sbin/slurmd slurmd /usr/bin/sbatch slurm-client; then
	run "integration: slurm cluster" go test -tags integration -count=1 -timeout 15m -v ./test/slurm/
else
	skip "integration: slurm cluster" "munge, slurmctld, slurmd or slurm-client missing and not installable"
fi

echo
if [ ${#skipped[@]} -gt 0 ]; then
	echo "SKIPPED SUITES: ${skipped[*]}"
	if [ "${CMESH_RUN_REQUIRE_INTEGRATION:-}" = 1 ]; then
		failed+=("skipped suites with CMESH_RUN_REQUIRE_INTEGRATION=1")
	fi
fi
echo "suites: $passed passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
if [ ${#failed[@]} -gt 0 ]; then
	echo "FAILED: ${failed[*]}"
	exit 1
fi
echo "all checks passed"
