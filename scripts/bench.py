#!/usr/bin/env python3
"""make bench: cmesh-run measured side by side with what users would use
otherwise (at, nq, task-spooler, a bare exec), medians of N runs, with the
ratios the project targets. Prints a Markdown table for docs/benchmarks.md."""
import json, os, platform, resource, shutil, statistics, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

N = int(os.environ.get("BENCH_N", "21"))
BIN = os.path.abspath("cmesh-run")
CLEAN = {"PATH": "/usr/bin:/bin", "CMESH_RUN_CONFIG": "/dev/null"}
rows = []


def run(argv, env=None, stdin=None):
    t = time.perf_counter()
    subprocess.run(argv, env=env or CLEAN, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - t) * 1000


QUIET = 0.02


def cmd(argv, env=None, stdin=None, settle=None):
    return dict(argv=argv, env=env, stdin=stdin, settle=settle)


def medians(*cmds, n=N):
    """Latency as one web request sees it, for commands compared with each
    other. Every timed run starts on a quiet machine, QUIET seconds after
    the last, and (settle) after the job the last run started has
    finished, so that no tool is timed while its previous job still runs.
    The commands take turns, round after round, in an order that rotates:
    this VM's speed drifts by up to 2x over minutes, and measured one after
    the other, two commands of a ratio would each see a different machine."""
    times = [[] for _ in cmds]
    for i in range(n):
        for k in range(len(cmds)):
            j = (i + k) % len(cmds)
            c = cmds[j]
            time.sleep(QUIET)
            t = time.perf_counter()
            p = subprocess.run(c["argv"], env=c["env"] or CLEAN, input=c["stdin"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
            times[j].append((time.perf_counter() - t) * 1000)
            if c["settle"]:
                c["settle"](p.stdout.decode().strip())
    return [statistics.median(t) for t in times]


def at_idle(_=None, deadline=30):
    """Waits until at's queue is empty: the job at started has finished."""
    deadline = time.time() + deadline
    while subprocess.run(["/usr/bin/atq"], capture_output=True).stdout.strip() and time.time() < deadline:
        time.sleep(0.005)


def cm_done(state):
    return lambda jid: subprocess.run(cm(state, "wait", "--timeout", "30s", jid), env=CLEAN, capture_output=True)


def peak_rss_mib(argv, env=None):
    """Peak RSS of one run of argv, as GNU time reads it from the kernel
    (wait4). Not from this process's own wait4: a child forked from
    Python counts Python's pages until it execs."""
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], env=env or CLEAN,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return int(p.stderr.strip().splitlines()[-1]) / 1024


def cpu_ms(argv, n=N):
    """Median CPU time (user + system) of one run of argv."""
    times = []
    for _ in range(n):
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, env=CLEAN, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append((ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) * 1000)
    return statistics.median(times)


def row(what, ms, ratio="", target="", ok=None):
    mark = "" if ok is None else (" ✓" if ok else " ✗ missed")
    rows.append((what, f"{ms:.2f}" if isinstance(ms, float) else ms, ratio, target + mark))


def cm(state, *args):
    return [BIN, "--state-dir", state, *args]


def fill(state, n, out_bytes=None):
    """A state dir with n finished jobs: copies of one real job."""
    jid = subprocess.run(cm(state, "schedule", "--", "true"), env=CLEAN, capture_output=True, text=True).stdout.strip()
    subprocess.run(cm(state, "wait", "--timeout", "30s", jid), env=CLEAN)
    rec = json.load(open(f"{state}/jobs/{jid}.json"))
    out = open(f"{state}/jobs/{jid}.out", "rb").read()
    for i in range(n - 1):
        nid = f"20200101-000000.{i:06d}-bench0"
        json.dump(dict(rec, id=nid), open(f"{state}/jobs/{nid}.json", "w"))
        open(f"{state}/jobs/{nid}.out", "wb").write(out)
        # What schedule keeps: the newest 1000 jobs in the recent index.
        if i >= n - 1000:
            open(f"{state}/recent/{nid}", "w").close()
    if out_bytes:
        # Grow the real job's output: start marker, lines, end marker.
        start, end = out.split(b"]\n", 1)[0] + b"]\n", out[out.index(b"]\n") + 2:]
        line = b"x" * 99 + b"\n"
        with open(f"{state}/jobs/{jid}.out", "wb") as f:
            f.write(start)
            chunk = line * 10000
            for _ in range(out_bytes // len(chunk)):
                f.write(chunk)
            f.write(end)
    return jid


def main():
    work = tempfile.mkdtemp(prefix="cmesh-run-bench.")
    try:
        bench(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians of {N} runs; {os.cpu_count()} cores; {platform.platform()}; {time.strftime('%Y-%m-%d')}\n")
    print("| operation | ms | ratio | target |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def bench(work):
    hello = os.path.join(work, "hello")
    with open(hello + ".go", "w") as f:
        f.write('package main\nimport "fmt"\nfunc main(){fmt.Println("hi")}\n')
    subprocess.run(["go", "build", "-o", hello, hello + ".go"], env=dict(os.environ, CGO_ENABLED="0"), check=True)
    hello_cpu = cpu_ms([hello])
    group = {
        "at": cmd(["/usr/bin/at", "-M", "now"], stdin=b"true\n", settle=at_idle),
        "sched": cmd(cm(f"{work}/s", "schedule", "--", "true"), settle=cm_done(f"{work}/s")),
        "hello": cmd([hello]),
        "sh": cmd(["/bin/sh", "-c", "true"]),
        "version": cmd([BIN, "version"]),
        "spool": cmd(cm(f"{work}/spool", "schedule", "--backend", "spool", "--", "true")),
        "direct": cmd(cm(f"{work}/direct", "schedule", "--backend", "direct", "--", "true"), settle=cm_done(f"{work}/direct")),
    }
    nq_env = ts_env = None
    if shutil.which("nq"):
        os.makedirs(f"{work}/nq", exist_ok=True)
        nq_env = dict(CLEAN, NQDIR=f"{work}/nq")
        group["nq"] = cmd(["nq", "true"], env=nq_env)
    ts = shutil.which("tsp") or shutil.which("ts")
    if ts:
        ts_env = dict(CLEAN, TS_SOCKET=f"{work}/ts.sock", TMPDIR=work)
        group["ts"] = cmd([ts, "true"], env=ts_env)
    ms = dict(zip(group, medians(*group.values())))
    at_now, sched, hello_ms = ms["at"], ms["sched"], ms["hello"]
    row("echo true \\| at now", at_now)
    row("cmesh-run schedule -- true (at)", sched, f"{sched/at_now:.2f}× at now", "≤ 1.3×", sched / at_now <= 1.3)
    row("  floor: process start + at now (version + at)", ms["version"] + at_now, f"{(ms['version'] + at_now)/at_now:.2f}× at now")
    row("static hello-world Go binary", hello_ms)
    row("sh -c true", ms["sh"])
    row("cmesh-run version (process start)", ms["version"])
    if "nq" in ms:
        row("nq true (submit)", ms["nq"])
    if "ts" in ms:
        row("task-spooler ts true (submit)", ms["ts"])
    # The second bar for the local backends: no slower than nq's
    # and task-spooler's own submit, measured in the same turns.
    rivals = [ms[k] for k in ("nq", "ts") if k in ms]
    for be in ("spool", "direct"):
        row(f"cmesh-run schedule --backend {be}", ms[be], f"{ms[be]/hello_ms:.2f}× hello", "≤ 3× hello", ms[be] / hello_ms <= 3)
        if rivals:
            row(f"  the same against nq and ts", ms[be], f"{ms[be]/max(rivals):.2f}× the slower", "≤ 1×", ms[be] <= max(rivals))

    # Submit to start: from the call to the moment the job's program runs,
    # by the program's own clock (one machine, one clock). The same program
    # for both: `date`, which at's sh starts from its script, and which
    # cmesh-run starts as the job (its output is the job's output file).
    def started_at(path):
        try:
            for line in open(path).read().splitlines():
                if line[:1].isdigit() and "." in line:
                    return float(line)
        except (OSError, ValueError):
            pass
        return None

    def to_start(i, state=None):
        time.sleep(QUIET)
        t = time.time()
        if state:
            jid = subprocess.run(cm(state, "schedule", "--", "date", "+%s.%N"), env=CLEAN, capture_output=True, text=True).stdout.strip()
            mark = f"{state}/jobs/{jid}.out"
        else:
            mark = f"{work}/start.{i}"
            subprocess.run(["/usr/bin/at", "-M", "now"], env=CLEAN, input=f"date +%s.%N > {mark}".encode(), capture_output=True)
        deadline = time.time() + 30
        started = None
        while started is None and time.time() < deadline:
            started = started_at(mark)
            if started is None:
                time.sleep(0.002)
        cm_done(state)(jid) if state else at_idle()
        return (started - t) * 1000 if started else float("inf")
    # In turns, as medians() does.
    at_lat, cm_lat = [], []
    for i in range(N):
        for who in ((None, f"{work}/start") if i % 2 == 0 else (f"{work}/start", None)):
            (cm_lat if who else at_lat).append(to_start(i, who))
    at_start, cm_start = statistics.median(at_lat), statistics.median(cm_lat)
    row("at now: submit to start", at_start)
    row("cmesh-run schedule (at): submit to start", cm_start, f"+{cm_start-at_start:.1f} ms", "≤ at + 10 ms", cm_start - at_start <= 10)

    small, big = f"{work}/small", f"{work}/big"
    id10, id10k = fill(small, 10), fill(big, 10000)
    group = {"s10": cmd(cm(small, "status", id10)), "s10k": cmd(cm(big, "status", id10k)),
             "l10": cmd(cm(small, "list", "--limit", "50")), "l10k": cmd(cm(big, "list", "--limit", "50"))}
    if nq_env:
        jid = subprocess.run(["nq", "true"], env=nq_env, capture_output=True, text=True).stdout.strip()
        subprocess.run(["nq", "-w", jid], env=nq_env, capture_output=True)
        group["nq"] = cmd(["nq", "-t", jid], env=nq_env)
    if ts_env:
        jid = subprocess.run([ts, "true"], env=ts_env, capture_output=True, text=True).stdout.strip()
        subprocess.run([ts, "-w", jid], env=ts_env, capture_output=True)
        group["ts"] = cmd([ts, "-s", jid], env=ts_env)
    ms = dict(zip(group, medians(*group.values())))
    if ts_env:
        run([ts, "-K"], env=ts_env)
    s10, s10k, l10, l10k = ms["s10"], ms["s10k"], ms["l10"], ms["l10k"]
    row("status ID, 10 jobs", s10)
    row("status ID, 10,000 jobs", s10k, f"{s10k/s10:.2f}× with 10", "≤ 1.2×", s10k / s10 <= 1.2)
    if "nq" in ms:
        row("nq -t JOB (status of one job)", ms["nq"])
    if "ts" in ms:
        row("ts -s JOB (status of one job)", ms["ts"])
    row("list --limit 50, 10 jobs", l10)
    row("list --limit 50, 10,000 jobs", l10k, f"{l10k/l10:.2f}× with 10", "≤ 3×", l10k / l10 <= 3)

    g1, m1 = f"{work}/g1", f"{work}/m1"
    gid = fill(g1, 1, out_bytes=1 << 30)
    mid = fill(m1, 1, out_bytes=1 << 20)
    gout = f"{g1}/jobs/{gid}.out"
    off = str((1 << 29))
    tail_ref, tail_cm, o1g, o1m = medians(
        cmd(["tail", "-n", "100", gout]),
        cmd(cm(g1, "log", "--tail", "100", gid)),
        cmd(cm(g1, "log", "--json", "--offset", off, "--limit", "65536", gid)),
        cmd(cm(m1, "log", "--json", "--offset", str(1 << 19), "--limit", "65536", mid)))
    row("tail -n 100 (1 GiB file)", tail_ref)
    row("log --tail 100 (1 GiB output)", tail_cm, f"{tail_cm/tail_ref:.2f}× tail", "≤ 2×", tail_cm / tail_ref <= 2)
    row("log --offset --limit 64K (1 MiB output)", o1m)
    row("log --offset --limit 64K (1 GiB output)", o1g, f"{o1g/o1m:.2f}× 1 MiB", "≤ 2×", o1g / o1m <= 2)

    rss = {
        "schedule": peak_rss_mib(cm(f"{work}/s", "schedule", "--", "true")),
        "status": peak_rss_mib(cm(big, "status", id10k)),
        "list": peak_rss_mib(cm(big, "list", "--limit", "50")),
        "log (1 GiB)": peak_rss_mib(cm(g1, "log", gid)),
        "log --tail (1 GiB)": peak_rss_mib(cm(g1, "log", "--tail", "100", gid)),
    }
    worst = max(rss.values())
    row("peak RSS, worst command (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()), f"{worst:.1f}", "", "≤ 20 MiB", worst <= 20)

    def atd_children_ms():
        """CPU time of the jobs atd has reaped so far: each job's sh and
        what it ran (for cmesh-run: the wrapper and the program)."""
        with open("/run/atd.pid") as f:
            stat = open(f"/proc/{f.read().strip()}/stat").read().rsplit(")", 1)[1].split()
        return (int(stat[13]) + int(stat[14])) * 1000 / os.sysconf("SC_CLK_TCK")

    def burst(argv_for, n=1000, callers=32):
        """Wall time of n submits from callers threads, and CPU per job:
        the caller's side (what the submit command ran, at included) and
        atd's side (the job), counted once the queue has drained."""
        at_idle()
        ru0, atd0 = resource.getrusage(resource.RUSAGE_CHILDREN), atd_children_ms()
        t = time.perf_counter()
        with ThreadPoolExecutor(callers) as ex:
            codes = list(ex.map(lambda i: subprocess.run(argv_for(i), env=CLEAN, input=b"true\n", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).returncode, range(n)))
        wall = (time.perf_counter() - t) * 1000
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        at_idle(deadline=300)
        caller = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) * 1000 / n
        return wall, codes, caller, (atd_children_ms() - atd0) / n
    at_ms, _, at_caller, at_job = burst(lambda i: ["/usr/bin/at", "-M", "now"])
    cm_ms, codes, cm_caller, cm_job = burst(lambda i: cm(f"{work}/burst", "schedule", "--", "true"))
    ids = set(os.path.splitext(n)[0] for n in os.listdir(f"{work}/burst/jobs") if n.endswith(".json"))
    valid = all(json.load(open(f"{work}/burst/jobs/{i}.json"))["id"] == i for i in ids)
    row("1,000 at now from 32 callers (wall)", at_ms)
    row("1,000 schedule from 32 callers (wall)", cm_ms, f"{cm_ms/at_ms:.2f}× at", "≤ 1.2×, none lost",
        cm_ms / at_ms <= 1.2 and codes.count(0) == 1000 and len(ids) == 1000 and valid)
    # Why the burst costs what it costs: CPU per job on both sides, and
    # the part of it that is two Go process starts (schedule, wrapper).
    row(f"  CPU per job, submit side: at {at_caller:.2f}, schedule (with its at) {cm_caller:.2f}", cm_caller, f"{cm_caller/at_caller:.2f}× at")
    row(f"  CPU per job, job side (atd's child: sh, then the program; cmesh-run: sh, wrapper, program): at {at_job:.2f}, cmesh-run {cm_job:.2f}", cm_job, f"{cm_job/at_job:.2f}× at")
    row(f"  CPU of two hello-world Go starts (the floor of schedule + wrapper)", 2 * hello_cpu, f"{2*hello_cpu/(at_caller+at_job):.2f}× at's whole job")


if __name__ == "__main__":
    main()
