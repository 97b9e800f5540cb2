package run

// Hand-written parts of the man page, in roff.

const manDescription = `A job started from a PHP\-FPM request with
.B "cmd &"
dies with the pool's cgroup, holds the pool's sockets, has no PATH and
leaves no exit status.
.B cmesh\-run
is the fix: it hands a small wrapper script to a backend that runs it
outside the caller's process tree (by default
.BR at (1):
.BR "at now" ),
records the job as JSON in the state dir, and returns the job's ID at once.
.PP
When atd starts the script, the wrapper
.RB ( "cmesh\-run _wrap" )
starts the job's exact argv in its own session, in its working directory,
with a clean environment, standard input from /dev/null and standard output
and error appended to the job's output file.
It writes a start marker and, when the job ends, an end marker with the exit
status or the signal that killed it.
.BR status ,
.B log
and
.B wait
read the record, the markers and the liveness of the job's processes;
anyone allowed to read the state dir can follow a job.`

const manSections = `.SH THE JOB OBJECT
.B status \-\-json
and
.B list \-\-json
print job objects (snake_case; fields may be added, never change meaning):
.BR id ,
.BR name " (or null),"
.BR state ,
.BR exit_code " (or null),"
.BR signal " (only when a signal killed the job),"
.BR command " (the argv),"
.BR workdir ,
.BR backend ,
.BR backend_ref " (at's job number, or null),"
.BR user " (the job runs as),"
.BR requested_by ,
.BR pid " (the job's process, or null),"
.BR attempt " (1\-based),"
.BR created_at ,
.BR started_at ,
.BR finished_at " (RFC 3339 UTC, or null),"
.BR output_path ,
and on schedule
.BR reused .
.PP
A job killed by signal N has exit_code 128+N, like a shell reports it.
A program that cannot be started leaves a line saying why in the output and
exit_code 127 (not found) or 126 (found but not runnable, or the workdir is
gone).
.SH STATES
.TP
.B queued
handed to the backend, not started yet.
.TP
.B waiting
started by the backend, waiting for a free slot (max_running).
.TP
.B running
the wrapper or the job's process is alive.
.TP
.B succeeded
the job exited 0.
.TP
.B failed
it exited non\-zero, or a signal killed it.
.TP
.B canceled
.B cmesh\-run cancel
stopped it.
.TP
.B timed_out
its timeout stopped it.
.TP
.B lost
no end marker was written and the job cannot still be running: its
processes are gone (a recycled PID does not count: the process start time is
compared), the machine rebooted, or the backend dropped the job before it
started.
A job is never reported running forever.
.SH JOB CONTROL
.B cancel
and
.B \-\-timeout
stop the whole job: SIGTERM to every process of it, SIGKILL to what is left
after the grace.
The wrapper is a child subreaper
.RB ( PR_SET_CHILD_SUBREAPER ),
so a grandchild that double\-forked or called
.BR setsid (2)
is still found below it.
The end marker then says
.B reason=canceled
or
.BR reason=timeout ;
exit_code is how the job's process ended: 143 after SIGTERM, 137 when SIGKILL
was needed, or the job's own status if it handled SIGTERM and exited.
.PP
With
.BR \-\-retries ,
a non\-zero exit starts the job again after the delay, never after a cancel
or a timeout; the timeout counts for each attempt.
Each attempt has its own markers, and the log shows a plain line
.RB \(dq [cmesh\-run:\ attempt\ 2\ of\ 3] \(dq
before the output of each attempt after the first;
.B attempt
and the exit status follow the last attempt.
.PP
Which backend honours which limit:
.BR \-\-nice ,
.BR \-\-limit\-cpu ,
.B \-\-limit\-nofile
and
.B \-\-limit\-core
are set by the wrapper and work with every backend.
.B \-\-memory\-max
and
.B \-\-cpu\-quota
need a cgroup: the systemd backend sets them; at, spool and direct refuse
them (exit 2) rather than ignore them.
.SH BACKENDS
Every backend runs the same script, so the same wrapper, markers and
records: status, log, wait and cancel do not care which one started a job.
.TP
.B at
(the default) hands the script to
.B at \-M now
on standard input, with a clean environment.
It needs at and a running atd, and the user allowed by at.allow/at.deny.
The job runs under atd: it survives the end of the request, FPM's restarts,
and the kill of FPM's cgroup.
.TP
.B systemd
a transient unit per job (systemd\-run), with MemoryMax and CPUQuota from
\-\-memory\-max and \-\-cpu\-quota.
It needs systemd as PID 1, and root (PHP gets there through sudo).
.TP
.B spool
writes the script into STATE_DIR/spool/queue; a
.B cmesh\-run worker
(under supervisor or systemd) starts jobs as they arrive, or
.B cmesh\-run drain
from cron every minute:
.RS
.PP
* * * * * cmesh /usr/local/bin/cmesh\-run drain
.RE
.IP
Jobs run detached from the worker: stopping or killing it does not stop them,
and none is ever started twice (a job is claimed by a rename, and its wrapper
starts it only while its record says queued).
.TP
.B direct
starts the script detached from schedule itself: new session, double fork,
every inherited descriptor closed, no terminal.
For machines with neither atd nor systemd.
It survives the end of the request and FPM's QUIT or TERM, but not a kill of
the caller's cgroup (systemctl restart php8.2\-fpm under systemd) nor a
reboot.
.TP
.B auto
at when it is usable, else systemd, else the spool when a worker is alive,
else direct;
.B doctor
says which one it picks and why.
.SH SPOOL REQUESTS
When PHP cannot exec at all (disable_functions lists exec, proc_open and the
rest), it writes a request into STATE_DIR/spool/incoming as
REQUEST_ID.json, first under a name that starts with a dot, then renamed:
.PP
.RS 4
.nf
{"request_id":"r1","profile":"pushfin","args":{"org":"mars","name":"mpvg"}}
{"request_id":"r2","argv":["/bin/echo","hi"],"name":"x","unique":true,
 "env":{"K":"V"},"workdir":"/opt","timeout":"15m","retries":1}
.fi
.RE
.PP
The worker or drain treats every request as untrusted, exactly like sudo
mode (profiles and their patterns; argv only with allow_free_commands = true;
env only for the profile's allow_env), queues it through the spool, and
answers in STATE_DIR/spool/results/REQUEST_ID.json with the job object, or
with {"error":{"code","message","hint"}} for a refusal, which is also
audited.
The worker opens each entry without following a link and without blocking
(a FIFO or a device never holds it up), reads only regular files of at most
64 KiB, and moves whatever it refuses to STATE_DIR/spool/rejected, so that
an entry is refused, answered and audited once.
A worker or drain starts only a script of spool/queue that belongs to a
queued spool job of its own state dir, whose record and script are owned by
its own user; run as root it refuses a state dir that another user owns.
PHP then reads STATE_DIR/jobs/ID.json and STATE_DIR/jobs/ID.out directly.
.SH MARKERS
The wrapper appends each marker to the output file in one
.BR write (2),
as a line of its own preceded by a newline:
.PP
.RS 4
.nf
\en[cmesh\-run:NONCE start attempt=1 pid=4242 time=2026\-11\-27T20:40:00Z]\en
\en[cmesh\-run:NONCE end attempt=1 exit=0 time=2026\-11\-27T20:41:30Z]\en
.fi
.RE
.PP
NONCE is a random secret of the job, kept in its record: what the job itself
prints, fake marker lines included, can never be taken for a marker.
The leading newline keeps a marker recognisable after a last line without
newline;
.B log
removes each marker with that newline, so it returns the job's own bytes
exactly.
.B \-\-raw
keeps them.
Offsets of
.B log \-\-offset
count bytes of the file, markers included.
.PP
No byte of the job comes before its start marker: the job's program is
held until the marker is written.
The wrapper starts it as a traced child, which the kernel stops at its
.BR execve (2),
before the program's first instruction, and then detaches from it; nothing
traces the job after that.
The record says
.B running
a moment later: the wrapper writes it while the program already runs,
holding the job's lock, so that a
.B cancel
waits for it.
Where that cannot be done (a nice value or limits to set, a set\-ID
program or one with file capabilities, tracing not allowed, as with
.I kernel.yama.ptrace_scope
2 or 3), a small
.B cmesh\-run _exec
process holds it instead, one process start more.
.SH THE JOB'S ENVIRONMENT
Clean by default:
.B PATH
(the config's, else
/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin),
.BR HOME ,
.BR USER ,
.BR LOGNAME ,
.B SHELL
of the user it runs as,
.B LANG
(the config's, else C.UTF\-8),
.BR CMESH_RUN_JOB_ID ,
.B CMESH_RUN_JOB_NAME
(empty for a job without name), then the config's [env], then
.BR \-\-env .
Nothing else of the caller reaches the job, nor at's spool file, unless
.B \-\-inherit\-env
is given; then the caller's environment comes first and the clean one is
laid over it.
.SH CONFIG
A TOML file,
.I /etc/cmesh\-run/config.toml
unless
.B \-\-config
names another.
Unknown keys and bad values are errors that name the file, the line and the key.
.TP
.B backend
the default backend: at, systemd, spool, direct or auto (see BACKENDS).
.TP
.B workdir
the default working directory of jobs.
.TP
.B path
the jobs' PATH.
.TP
.B lang
the jobs' LANG.
.TP
.B state_dir
the state dir.
.TP
.B max_running
how many jobs of the state dir may run at once (0: no limit).
Jobs beyond it are
.B waiting
and start in creation order as slots free up.
A slot is a lock on byte N of STATE_DIR/private/slots.lock held by the
job's wrapper, so the kernel frees it however the wrapper ends.
.TP
.B timeout
the default of \-\-timeout ("15m"; durations take s, m, h and d).
.TP
.B grace
the default of \-\-grace (10s).
.TP
.B retries
the default of \-\-retries (0).
.TP
.B retry_delay
the default of \-\-retry\-delay (10s).
.TP
.B [retain]
.B max_age
and
.BR max_jobs :
each schedule removes finished jobs older than max_age, or beyond the newest
max_jobs, looking at no more than 32 of the oldest jobs each time.
.TP
.B allow_free_commands
true: any command may run; false: only profiles.
Unset: true for a plain caller, false under sudo.
.TP
.B audit_log
a file for the audit lines (JSON, one per schedule, refusal and cancel);
unset: syslog, facility authpriv; when neither takes a line,
STATE_DIR/private/audit.log.
.TP
.B root_jobs_readable
true: a job that root schedules gets a record and output of mode 0640 like
everyone's; unset or false: 0600, so that the state dir's group (the web
user's) cannot read what root's jobs print.
.TP
.B group
the group a new state dir gets, with the setgid bit, so that everything
below it is readable by that group (the web server's, to read status and
logs directly).
.TP
.B [env]
variables set in every job.
.TP
.B [profiles.NAME]
a pre\-approved command:
.B command
is an argv whose elements may hold {key} placeholders;
.B args
maps each key to a regular expression its value must match in full;
.B name
a job name template;
.BR unique ,
.BR timeout ,
.BR retries ,
.BR workdir ,
.B env
as for schedule;
.B allow_env
the variables a caller may set with \-\-env under sudo.
A value is substituted inside one argv element: it never becomes two words
or shell code.
A profile's timeout and retries (else the config's) are ceilings: a caller
may ask for less, never for more; \-\-timeout 0s (none) or a longer one, or
more \-\-retries, is refused with exit 5.
.B config check
and
.B doctor
warn about a pattern that accepts a value starting with "\-", which the
program would read as an option: write
.B [a\-z0\-9][a\-z0\-9\-]*
rather than
.BR [a\-z0\-9\-]+ .
.SH SECURITY
Under sudo (SUDO_USER set, or the real uid differs from the effective one)
the config comes only from /etc/cmesh\-run/config.toml, which must be owned by
root and not writable by group or others, or everything is refused;
\-\-config, \-\-state\-dir, CMESH_RUN_CONFIG, CMESH_RUN_STATE_DIR,
\-\-inherit\-env, \-\-workdir and malformed job IDs are refused; only profiles
run unless allow_free_commands = true; \-\-env only for the profile's
allow_env; a profile's timeout and retries may only be tightened.
The backends' own commands
.RB ( _wrap ,
.BR _exec ,
.BR _man ),
.B worker
and
.BR drain ,
.B setup
(unless sudo made the caller root),
.B config check FILE
and
.B doctor \-\-fpm\-conf
(they would read a file the caller names, as the sudo target) are refused
too.
Each refusal exits 5, runs nothing and leaves an audit line; a usage error
under sudo exits 2 and leaves one as well.
The job runs as the sudo target user; its record keeps SUDO_USER as
requested_by.
.PP
The wrapper runs a job only with the argv, workdir, environment and limits
that schedule recorded: the record holds a MAC of them, keyed by a secret
that only the backend's script carries, so knowing a job's record (the web
user reads it) is no way to make the wrapper run anything else.
.PP
The state dir is 0750 and records and outputs 0640 (0600 for root's jobs,
see root_jobs_readable); nothing in it is opened through a symlink
(O_NOFOLLOW).
Every lock lives in STATE_DIR/private, which only the state dir's owner may
enter: a lock the web user could open, it could hold, and hang schedule,
cancel or the worker.
The script a backend runs is handed to it on standard input, so no file the
caller could change afterwards is read when the job starts.
.PP
Every schedule, refusal and cancel leaves exactly one audit line of at most
4 KiB: long values are cut and say how long they were, long argument lists
say how many arguments were left out.
Text output of
.B status
and
.B list
escapes control characters (a command is shown in bash's $'...' form);
JSON output is exact.
.SH ENVIRONMENT
.TP
.B CMESH_RUN_STATE_DIR
as \-\-state\-dir.
.TP
.B CMESH_RUN_CONFIG
as \-\-config.
.TP
.B XDG_STATE_HOME
where the per\-user state dir lies when no other is chosen.
.TP
.B SUDO_USER
recorded as requested_by.
.TP
.B NO_COLOR
when set, tables are never coloured (they are only on a terminal anyway).
.SH FILES
.TP
.I /etc/cmesh\-run/config.toml
the config, when it exists.
.TP
.I /var/lib/cmesh\-run
the state dir for root, or for a user who may write it; others use
.I $XDG_STATE_HOME/cmesh\-run
(by default
.IR ~/.local/state/cmesh\-run ).
.TP
.I STATE_DIR/jobs/ID.json
the job's record (mode 0640), replaced atomically:
temporary file, fsync, rename.
.TP
.I STATE_DIR/jobs/ID.out
the job's output with the markers (0640).
.TP
.I STATE_DIR/private/
mode 0700, the state dir's owner's alone: every lock
.RI ( lock ,
the state dir's;
.IR jobs.lock ,
a byte per job;
.IR slots.lock ,
a byte per max_running slot;
.IR worker.lock ,
the spool worker's) and
.IR audit.log ,
the audit lines that neither audit_log nor syslog took.
.TP
.I STATE_DIR/spool/
the spool backend's queue: queue/, claimed/, incoming/ (requests),
results/ (answers), rejected/ (refused requests, moved out of incoming once),
worker.pid (the worker at work).
.TP
.I STATE_DIR/active/ID
present while the job has not finished.
.TP
.I STATE_DIR/recent/ID
present for about the newest 1000 jobs, so that
.B list
and the
.B status
overview read a small folder, not one that grows with every job;
they read
.I jobs/
only for older jobs.
.TP
.I STATE_DIR/entry
an empty file; the names in
.I active/
and
.I recent/
are hard links to it, so that marking a job allocates no inode.
Where a link is refused (another user's entry under
.IR fs.protected_hardlinks ),
the name is an empty file of its own.
.TP
.I /etc/at.allow, /etc/at.deny
who may use at; Debian's at.deny lists www\-data.
.SH EXIT STATUS
.TP
.B 0
success.
.TP
.B 1
internal error.
.TP
.B 2
usage error or invalid input.
.TP
.B 3
no such job.
.TP
.B 4
backend unavailable: at missing, atd not running, the user denied by
at.allow or at.deny.
.TP
.B 5
refused by policy.
.PP
Errors go to standard error as one line, followed by a line that starts
with "hint:" and says what to do.
With
.B \-\-json
standard output also gets
{"error":{"code":"usage|not_found|backend_unavailable|denied|internal","message":"..."}}.
.B wait
exits with the job's exit code, 124 when its \-\-timeout passed first, and
125 when the job was lost or canceled.
.SH EXAMPLES
From PHP (exec returns the last line: the job ID):
.PP
.RS 4
.nf
$id = exec('/usr/local/bin/cmesh\-run schedule \-\- ' .
    escapeshellarg($script) . ' \-o ' . escapeshellarg($org), $out, $rc);
.fi
.RE
.PP
Poll the output from a page:
.PP
.RS 4
.nf
cmesh\-run log \-\-json \-\-offset 0 ID
cmesh\-run log \-\-json \-\-offset NEXT_OFFSET ID
.fi
.RE
.PP
Follow a build from a terminal, then get its result:
.PP
.RS 4
.nf
id=$(cmesh\-run schedule \-\-name mars \-\- /opt/cmesh/scripts/pushfin.sh \-o mars \-n mpvg)
cmesh\-run log \-f "$id"
cmesh\-run wait "$id"; echo "exit $?"
.fi
.RE
.SH SEE ALSO
.BR at (1),
.BR atd (8),
.BR php\-fpm (8)
`
