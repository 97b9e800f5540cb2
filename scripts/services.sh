#!/bin/bash
# Installs what the integration suites need and starts atd, when run as
# root. Prints one line per thing it could not do. Sourced by test.sh and
# demo.sh: sets CMESH_ATD_STARTED_PID when it started atd itself, so the
# caller can stop exactly that process.

apt_install() {
	[ "$(id -u)" = 0 ] || return 1
	command -v apt-get >/dev/null || return 1
	export DEBIAN_FRONTEND=noninteractive
	if [ -z "${CMESH_APT_UPDATED:-}" ]; then
		apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null || return 1
		CMESH_APT_UPDATED=1
	fi
	apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends "$@" >/dev/null
}

# need_pkgs CMD PKG [CMD PKG...]: install the packages whose command is missing.
need_pkgs() {
	local missing=()
	while [ $# -ge 2 ]; do
		command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || missing+=("$2")
		shift 2
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "installing: ${missing[*]}"
	apt_install "${missing[@]}"
}

atd_running() {
	local f pid
	for f in /run/atd.pid /var/run/atd.pid; do
		[ -r "$f" ] || continue
		pid=$(cat "$f" 2>/dev/null)
		[ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = atd ] && return 0
	done
	return 1
}

# ensure_atd: at installed and atd running, or return 1.
ensure_atd() {
	need_pkgs /usr/bin/at at /usr/sbin/atd at || return 1
	atd_running && return 0
	[ "$(id -u)" = 0 ] || return 1
	# atd hands every descriptor it holds to every job: start it with
	# none but 0-2, whatever this shell inherited.
	(
		for fd in $(ls /proc/$BASHPID/fd); do
			[ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
		done
		exec /usr/sbin/atd
	) || return 1
	local i
	for i in $(seq 1 100); do
		if atd_running; then
			CMESH_ATD_STARTED_PID=$(cat /run/atd.pid 2>/dev/null || cat /var/run/atd.pid)
			export CMESH_ATD_STARTED_PID
			return 0
		fi
		sleep 0.05
	done
	return 1
}

# stop_atd_if_started stops the atd this script started. A suite may have
# stopped and restarted it (the atd-down test does), so the pid file names
# the one to stop; the PID is checked to still be atd before it is killed.
stop_atd_if_started() {
	[ -n "${CMESH_ATD_STARTED_PID:-}" ] || return 0
	local pid
	pid=$(cat /run/atd.pid 2>/dev/null || echo "$CMESH_ATD_STARTED_PID")
	if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = atd ]; then
		kill "$pid" 2>/dev/null || true
	fi
	unset CMESH_ATD_STARTED_PID
}
