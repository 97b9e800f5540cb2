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


def median(argv, env=None, stdin=None, n=N):
    return statistics.median(run(argv, env, stdin) for _ in range(n))


def peak_rss_mib(argv, env=None):
    """Peak RSS of one run of argv, from the kernel's accounting."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.Popen(argv, env=env or CLEAN, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, ru = os.wait4(p.pid, 0)
    return ru.ru_maxrss / 1024


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
    at_now = median(["/usr/bin/at", "-M", "now"], stdin=b"true\n")
    row("echo true | at now", at_now)
    sched = median(cm(f"{work}/s", "schedule", "--", "true"))
    row("cmesh-run schedule -- true (at)", sched, f"{sched/at_now:.2f}× at now", "≤ 1.3×", sched / at_now <= 1.3)
    hello = os.path.join(work, "hello")
    with open(hello + ".go", "w") as f:
        f.write('package main\nimport "fmt"\nfunc main(){fmt.Println("hi")}\n')
    subprocess.run(["go", "build", "-o", hello, hello + ".go"], env=dict(os.environ, CGO_ENABLED="0"), check=True)
    hello_ms = median([hello])
    sh_ms = median(["/bin/sh", "-c", "true"])
    row("static hello-world Go binary", hello_ms)
    row("sh -c true", sh_ms)
    for be in ("spool", "direct"):
        ms = median(cm(f"{work}/{be}", "schedule", "--backend", be, "--", "true"))
        row(f"cmesh-run schedule --backend {be}", ms, f"{ms/hello_ms:.2f}× hello", "≤ 3× hello", ms / hello_ms <= 3)
    if shutil.which("nq"):
        os.makedirs(f"{work}/nq", exist_ok=True)
        env = dict(CLEAN, NQDIR=f"{work}/nq")
        row("nq true (submit)", median(["nq", "true"], env=env))
    if shutil.which("tsp") or shutil.which("ts"):
        ts = shutil.which("tsp") or shutil.which("ts")
        env = dict(CLEAN, TS_SOCKET=f"{work}/ts.sock", TMPDIR=work)
        row("task-spooler ts true (submit)", median([ts, "true"], env=env))
        run([ts, "-K"], env=env)

    small, big = f"{work}/small", f"{work}/big"
    id10, id10k = fill(small, 10), fill(big, 10000)
    s10, s10k = median(cm(small, "status", id10)), median(cm(big, "status", id10k))
    row("status ID, 10 jobs", s10)
    row("status ID, 10,000 jobs", s10k, f"{s10k/s10:.2f}× with 10", "≤ 1.2×", s10k / s10 <= 1.2)
    l10, l10k = median(cm(small, "list", "--limit", "50")), median(cm(big, "list", "--limit", "50"))
    row("list --limit 50, 10 jobs", l10)
    row("list --limit 50, 10,000 jobs", l10k, f"{l10k/l10:.2f}× with 10", "≤ 3×", l10k / l10 <= 3)

    g1, m1 = f"{work}/g1", f"{work}/m1"
    gid = fill(g1, 1, out_bytes=1 << 30)
    mid = fill(m1, 1, out_bytes=1 << 20)
    gout = f"{g1}/jobs/{gid}.out"
    tail_ref = median(["tail", "-n", "100", gout])
    tail_cm = median(cm(g1, "log", "--tail", "100", gid))
    row("tail -n 100 (1 GiB file)", tail_ref)
    row("log --tail 100 (1 GiB output)", tail_cm, f"{tail_cm/tail_ref:.2f}× tail", "≤ 2×", tail_cm / tail_ref <= 2)
    off = str((1 << 29))
    o1g = median(cm(g1, "log", "--json", "--offset", off, "--limit", "65536", gid))
    o1m = median(cm(m1, "log", "--json", "--offset", str(1 << 19), "--limit", "65536", mid))
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

    def burst(argv_for, n=1000, callers=32):
        t = time.perf_counter()
        with ThreadPoolExecutor(callers) as ex:
            codes = list(ex.map(lambda i: subprocess.run(argv_for(i), env=CLEAN, input=b"true\n", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).returncode, range(n)))
        return (time.perf_counter() - t) * 1000, codes
    at_ms, _ = burst(lambda i: ["/usr/bin/at", "-M", "now"])
    cm_ms, codes = burst(lambda i: cm(f"{work}/burst", "schedule", "--", "true"))
    ids = set(os.path.splitext(n)[0] for n in os.listdir(f"{work}/burst/jobs") if n.endswith(".json"))
    valid = all(json.load(open(f"{work}/burst/jobs/{i}.json"))["id"] == i for i in ids)
    row("1,000 at now from 32 callers (wall)", at_ms)
    row("1,000 schedule from 32 callers (wall)", cm_ms, f"{cm_ms/at_ms:.2f}× at", "≤ 1.2×, none lost",
        cm_ms / at_ms <= 1.2 and codes.count(0) == 1000 and len(ids) == 1000 and valid)


if __name__ == "__main__":
    main()
