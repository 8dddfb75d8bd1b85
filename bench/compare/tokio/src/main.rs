//! Tokio side of ../../shared/bench/WORKLOADS.md (see bench/compare/README.md).
//!
//!     tokio-bench <workload> [N]
//!
//! prints one line `workload=<name> n=<N> wall_ms=<x> ns_per_op=<y> [key=value ...]`
//! on stdout (always ending in `rss_kb=<VmHWM>`); everything else goes to
//! stderr.  Each workload builds its own runtime (2 workers), and the process
//! `exit`s without dropping it.  A failed check exits 1.
//!
//! The driver (WORKLOADS.md, "Rules common to all workloads") is a task
//! `tokio::spawn`ed from `block_on` and awaited by it, so it runs on a worker
//! and its spawns go to that worker's local queue; `t0` is taken after the
//! runtime is built, just before `block_on`, and the end when the driver's
//! result is back in `main`.  Exceptions: `spawn_many_remote` (the main thread
//! spawns through the runtime handle) and `http_hello`.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::exit;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{AcqRel, Relaxed},
};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const WORKERS: usize = 2;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A `/proc/self/status` field such as `VmHWM` or `VmRSS`, in kB.
fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(key).map_or(false, |r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Peak resident set size (VmHWM) of this process, in kB.
fn vm_hwm_kb() -> u64 {
    status_kb("VmHWM")
}

/// `struct rusage` of Linux on 64-bit targets: two timevals, then 14 longs.
#[repr(C)]
struct Rusage {
    utime: [i64; 2],
    stime: [i64; 2],
    rest: [i64; 14],
}

extern "C" {
    fn getrusage(who: i32, usage: *mut Rusage) -> i32;
}

/// CPU time in microseconds, user + system, of `who` (0: this process,
/// every thread; -1: its children that were waited for, here only wrk).
fn cpu_us(who: i32) -> f64 {
    let mut u = Rusage {
        utime: [0; 2],
        stime: [0; 2],
        rest: [0; 14],
    };
    // SAFETY: getrusage writes one struct rusage, which Rusage mirrors.
    if unsafe { getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    ((u.utime[0] + u.stime[0]) * 1_000_000 + u.utime[1] + u.stime[1]) as f64
}

fn fail(workload: &str, why: &str) -> ! {
    eprintln!("{workload}: FAILED: {why}");
    exit(1);
}

/// The result line: `ns_per_op = wall / ops`, then the workload's own
/// `key=value` pairs (`extra`, may be empty), then `rss_kb` (VmHWM).
fn report(name: &str, n: u64, wall: Duration, ops: u64, extra: &str) {
    let ns = wall.as_nanos() as f64;
    println!(
        "workload={name} n={n} wall_ms={:.3} ns_per_op={:.1}{}{extra} rss_kb={}",
        ns / 1e6,
        ns / ops as f64,
        if extra.is_empty() { "" } else { " " },
        vm_hwm_kb()
    );
}

/// Run `driver` as a task spawned from `block_on` and awaited by it; return
/// its result and the time from just before `block_on` to its return.
fn run_driver<F>(rt: &tokio::runtime::Runtime, name: &str, driver: F) -> (F::Output, Duration)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let t0 = Instant::now();
    let r = rt.block_on(async move { tokio::spawn(driver).await });
    let wall = t0.elapsed();
    match r {
        Ok(v) => (v, wall),
        Err(e) => fail(name, &format!("driver: {e}")),
    }
}

/// Process-global counter (relaxed), as WORKLOADS.md asks.
static COUNTER: AtomicU64 = AtomicU64::new(0);

// ---- spawn_many ----

async fn spawn_many_driver(n: u64) -> u64 {
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        handles.push(tokio::spawn(async move {
            COUNTER.fetch_add(1, Relaxed);
            i
        }));
    }
    let mut sum = 0u64;
    for h in handles {
        sum += h
            .await
            .unwrap_or_else(|e| fail("spawn_many", &format!("join: {e}")));
    }
    sum
}

fn spawn_many(n: u64) {
    let rt = runtime();
    let (sum, wall) = run_driver(&rt, "spawn_many", spawn_many_driver(n));
    if sum != n * (n - 1) / 2 || COUNTER.load(Relaxed) != n {
        fail(
            "spawn_many",
            &format!("sum {sum}, counter {}", COUNTER.load(Relaxed)),
        );
    }
    report("spawn_many", n, wall, n, "");
    finish(rt);
}

// ---- spawn_many_remote ----

/// The main thread, not a worker, spawns empty tasks through the runtime
/// handle in batches of 10,000 and after each batch blocks until all of them
/// have been awaited in order (Tokio's `spawn_many_remote_idle`).
fn spawn_many_remote(n: u64) {
    const BATCH: u64 = 10_000;
    let rt = runtime();
    let mut handles = Vec::with_capacity(BATCH as usize);
    let mut joined = 0u64;
    let t0 = Instant::now();
    let mut done = 0u64;
    while done < n {
        let b = BATCH.min(n - done);
        for _ in 0..b {
            handles.push(rt.spawn(async {}));
        }
        joined += rt.block_on(async {
            let mut ok = 0u64;
            for h in handles.drain(..) {
                if h.await.is_ok() {
                    ok += 1;
                }
            }
            ok
        });
        done += b;
    }
    let wall = t0.elapsed();
    if joined != n {
        fail(
            "spawn_many_remote",
            &format!("{joined} of {n} tasks joined"),
        );
    }
    report("spawn_many_remote", n, wall, n, "");
    finish(rt);
}

// ---- yield_many ----

const YIELDS: u64 = 1000;

async fn yield_driver(n: u64) -> u64 {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async {
                for _ in 0..YIELDS {
                    tokio::task::yield_now().await;
                }
                YIELDS
            })
        })
        .collect();
    let mut total = 0u64;
    for h in handles {
        total += h
            .await
            .unwrap_or_else(|e| fail("yield_many", &format!("join: {e}")));
    }
    total
}

fn yield_many(n: u64) {
    let rt = runtime();
    let (total, wall) = run_driver(&rt, "yield_many", yield_driver(n));
    if total != n * YIELDS {
        fail("yield_many", &format!("total {total}"));
    }
    report("yield_many", n, wall, n * YIELDS, "");
    finish(rt);
}

// ---- ping_pong ----

/// The driver task is the ping end: it spawns the echo task, does N round
/// trips over two capacity-1 channels, closes A and joins the echo task.
async fn ping_pong_driver(n: u64) -> u64 {
    let (tx_a, mut rx_a) = mpsc::channel::<u64>(1);
    let (tx_b, mut rx_b) = mpsc::channel::<u64>(1);
    let echo = tokio::spawn(async move {
        while let Some(v) = rx_a.recv().await {
            if tx_b.send(v).await.is_err() {
                fail("ping_pong", "send on B");
            }
        }
    });
    let mut acc = 0u64;
    for i in 0..n {
        if tx_a.send(i).await.is_err() {
            fail("ping_pong", "send on A");
        }
        acc += rx_b
            .recv()
            .await
            .unwrap_or_else(|| fail("ping_pong", "B closed"));
    }
    drop(tx_a);
    echo.await
        .unwrap_or_else(|e| fail("ping_pong", &format!("join: {e}")));
    acc
}

fn ping_pong(n: u64) {
    let rt = runtime();
    let (acc, wall) = run_driver(&rt, "ping_pong", ping_pong_driver(n));
    if acc != n * (n - 1) / 2 {
        fail("ping_pong", &format!("sum {acc}"));
    }
    report("ping_pong", n, wall, n, "");
    finish(rt);
}

// ---- chained_spawn ----

const DEPTH: u32 = 1000;

/// Spawn a task that signals `done` if k == 1, else calls chain(k - 1).
fn chain(k: u32, done: oneshot::Sender<()>) {
    tokio::spawn(async move {
        if k == 1 {
            let _ = done.send(());
        } else {
            chain(k - 1, done);
        }
    });
}

async fn chained_driver(n: u64) -> u64 {
    let mut chains = 0u64;
    for _ in 0..n {
        let (tx, rx) = oneshot::channel();
        chain(DEPTH, tx);
        if rx.await.is_ok() {
            chains += 1;
        }
    }
    chains
}

fn chained_spawn(n: u64) {
    let rt = runtime();
    let (chains, wall) = run_driver(&rt, "chained_spawn", chained_driver(n));
    if chains != n {
        fail(
            "chained_spawn",
            &format!("{chains} of {n} chains completed"),
        );
    }
    report("chained_spawn", n, wall, n * DEPTH as u64, "");
    finish(rt);
}

// ---- fib_spawn ----

/// Async recursion: every call (the inline one too) is a boxed future.
fn fib(n: u64) -> Pin<Box<dyn Future<Output = u64> + Send>> {
    Box::pin(async move {
        if n < 2 {
            return n;
        }
        let h = tokio::spawn(fib(n - 1));
        let b = fib(n - 2).await;
        h.await
            .unwrap_or_else(|e| fail("fib_spawn", &format!("join: {e}")))
            + b
    })
}

fn fib_plain(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib_plain(n - 1) + fib_plain(n - 2)
    }
}

fn fib_spawn(n: u64) {
    let rt = runtime();
    let (r, wall) = run_driver(&rt, "fib_spawn", fib(n));
    if r != fib_plain(n) {
        fail("fib_spawn", &format!("fib({n}) = {r}"));
    }
    report("fib_spawn", n, wall, fib_plain(n + 1) - 1, "");
    finish(rt);
}

// ---- sleep_many ----

static LATE_SUM_NS: AtomicU64 = AtomicU64::new(0);
static LATE_MAX_NS: AtomicU64 = AtomicU64::new(0);

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sleep until `d_ms` after first running; record the lateness; return d_ms.
async fn sleeper(d_ms: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(d_ms);
    tokio::time::sleep_until(deadline).await;
    let late = tokio::time::Instant::now()
        .saturating_duration_since(deadline)
        .as_nanos() as u64;
    LATE_SUM_NS.fetch_add(late, Relaxed);
    LATE_MAX_NS.fetch_max(late, Relaxed);
    d_ms
}

/// Returns (sum of the generated durations, sum of the joined results).
async fn sleep_driver(n: u64) -> (u64, u64) {
    let mut rng = XorShift(42);
    let mut generated = 0u64;
    let mut handles = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let d = rng.next() % 1001;
        generated += d;
        handles.push(tokio::spawn(sleeper(d)));
    }
    let mut joined = 0u64;
    for h in handles {
        joined += h
            .await
            .unwrap_or_else(|e| fail("sleep_many", &format!("join: {e}")));
    }
    (generated, joined)
}

fn sleep_many(n: u64) {
    let mut rng = XorShift(42);
    let first: Vec<u64> = (0..8).map(|_| rng.next() % 1001).collect();
    if first != [278, 59, 625, 115, 676, 471, 86, 730] {
        fail("sleep_many", &format!("duration generator: {first:?}"));
    }
    let rt = runtime();
    let ((generated, joined), wall) = run_driver(&rt, "sleep_many", sleep_driver(n));
    let peak = vm_hwm_kb();
    if joined != generated || (n == 1_000_000 && generated != 500_416_189) {
        fail(
            "sleep_many",
            &format!("sum of durations: generated {generated}, joined {joined}"),
        );
    }
    let extra = format!(
        "rss_peak_kb={peak} late_mean_us={:.1} late_max_us={:.1}",
        LATE_SUM_NS.load(Relaxed) as f64 / n as f64 / 1e3,
        LATE_MAX_NS.load(Relaxed) as f64 / 1e3
    );
    report("sleep_many", n, wall, n, &extra);
    finish(rt);
}

// ---- idle_memory ----

static IDLE_N: AtomicU64 = AtomicU64::new(0);
static IDLE_SLEEP_MS: AtomicU64 = AtomicU64::new(3000);
static STARTED: AtomicU64 = AtomicU64::new(0);
static REMAINING: AtomicU64 = AtomicU64::new(0);
static RESLEEPS: AtomicU64 = AtomicU64::new(0);
static IDLE_DONE: Mutex<Option<oneshot::Sender<()>>> = Mutex::new(None);

/// A detached task that sleeps until every task has started (re-sleeping S ms
/// at a time), and the last one to finish signals the driver.
async fn idle_task() {
    STARTED.fetch_add(1, Relaxed);
    let s = Duration::from_millis(IDLE_SLEEP_MS.load(Relaxed));
    loop {
        tokio::time::sleep(s).await;
        if STARTED.load(Relaxed) == IDLE_N.load(Relaxed) {
            break;
        }
        RESLEEPS.fetch_add(1, Relaxed);
    }
    if REMAINING.fetch_sub(1, AcqRel) == 1 {
        if let Some(tx) = IDLE_DONE.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

/// Returns the duration of the spawn loop.
async fn idle_driver(n: u64, done: oneshot::Receiver<()>) -> Duration {
    let t0 = Instant::now();
    for _ in 0..n {
        tokio::spawn(idle_task());
    }
    let spawn = t0.elapsed();
    done.await
        .unwrap_or_else(|_| fail("idle_memory", "completion signal dropped"));
    spawn
}

fn idle_memory(n: u64) {
    if let Ok(s) = std::env::var("ANCHOR_IDLE_SLEEP_MS") {
        IDLE_SLEEP_MS.store(
            s.trim()
                .parse()
                .unwrap_or_else(|_| fail("idle_memory", "ANCHOR_IDLE_SLEEP_MS")),
            Relaxed,
        );
    }
    IDLE_N.store(n, Relaxed);
    REMAINING.store(n, Relaxed);
    let (tx, rx) = oneshot::channel();
    *IDLE_DONE.lock().unwrap() = Some(tx);
    eprintln!(
        "idle_memory: task future {} bytes, align {}",
        std::mem::size_of_val(&idle_task()),
        std::mem::align_of_val(&idle_task())
    );
    let rt = runtime();
    let base = status_kb("VmRSS");
    let (spawn, wall) = run_driver(&rt, "idle_memory", idle_driver(n, rx));
    let peak = vm_hwm_kb();
    if STARTED.load(Relaxed) != n || REMAINING.load(Relaxed) != 0 {
        fail(
            "idle_memory",
            &format!(
                "started {}, remaining {}",
                STARTED.load(Relaxed),
                REMAINING.load(Relaxed)
            ),
        );
    }
    let extra = format!(
        "rss_base_kb={base} rss_peak_kb={peak} bytes_per_task={:.0} spawn_ms={:.3} resleeps={} sleep_ms={}",
        (peak as f64 - base as f64) * 1024.0 / n as f64,
        spawn.as_nanos() as f64 / 1e6,
        RESLEEPS.load(Relaxed),
        IDLE_SLEEP_MS.load(Relaxed)
    );
    report("idle_memory", n, wall, n, &extra);
    finish(rt);
}

// ---- http_hello ----

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";

/// One connection: after each read, answer every complete request in the
/// buffer with one write_all, and keep what follows the last one.
async fn http_conn(mut sock: TcpStream) {
    let _ = sock.set_nodelay(true);
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let mut out = Vec::with_capacity(4096);
    let finder = memchr::memmem::Finder::new(b"\r\n\r\n");
    loop {
        let n = match sock.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        len += n;
        let mut start = 0;
        while let Some(i) = finder.find(&buf[start..len]) {
            out.extend_from_slice(RESPONSE);
            start += i + 4;
        }
        if !out.is_empty() {
            if sock.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        buf.copy_within(start..len, 0);
        len -= start;
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

async fn http_accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                tokio::spawn(http_conn(sock));
            }
            // Out of descriptors (EMFILE, ENFILE) and the like: let connections end.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[derive(Default)]
struct Wrk {
    requests: u64,
    seconds: f64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// A wrk latency figure such as "1.20ms", in microseconds.
fn wrk_us(s: &str) -> f64 {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        return -1.0;
    };
    num.parse::<f64>().map(|v| v * mult).unwrap_or(-1.0)
}

fn parse_wrk(text: &str) -> Wrk {
    let mut r = Wrk::default();
    for line in text.lines() {
        let p = line.trim_start();
        let words: Vec<&str> = p.split_whitespace().collect();
        if let Some(v) = p.strip_prefix("50%") {
            r.p50_us = wrk_us(v);
        } else if let Some(v) = p.strip_prefix("99%") {
            r.p99_us = wrk_us(v);
        } else if p.contains("requests in") {
            // "123456 requests in 5.00s, 6.20MB read"
            r.requests = words[0].parse().unwrap_or(0);
            r.seconds = words[3]
                .trim_end_matches(',')
                .trim_end_matches('s')
                .parse()
                .unwrap_or(0.0);
        } else if let Some(v) = p.strip_prefix("Socket errors:") {
            // " connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                r.errors += part
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0u64);
            }
        } else if let Some(v) = p.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse().unwrap_or(0u64);
        } else if let Some(v) = p.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        }
    }
    r
}

/// Serve 127.0.0.1:port while wrk, a child process, loads it for 5 s.
fn http_hello(port: u64) {
    let rt = runtime();
    let (text, server_us, wrk_us) = rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port as u16))
            .await
            .unwrap_or_else(|e| fail("http_hello", &format!("listen: {e}")));
        let acceptor = tokio::spawn(http_accept_loop(listener));
        let url = format!("http://127.0.0.1:{port}/");
        let cpu0 = cpu_us(0);
        let out = tokio::process::Command::new("wrk")
            .args(["-t1", "-c64", "-d5s", "--latency", &url])
            .stderr(std::process::Stdio::inherit())
            .output()
            .await;
        let server_us = cpu_us(0) - cpu0;
        acceptor.abort();
        match out {
            Ok(o) if o.status.success() => (
                String::from_utf8_lossy(&o.stdout).into_owned(),
                server_us,
                cpu_us(-1),
            ),
            Ok(o) => fail(
                "http_hello",
                &format!(
                    "wrk exited with {}\n{}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout)
                ),
            ),
            Err(e) => fail(
                "http_hello",
                &format!("cannot run wrk (is it installed?): {e}"),
            ),
        }
    });
    let r = parse_wrk(&text);
    if r.requests == 0 || r.rps <= 0.0 {
        fail("http_hello", "wrk completed no requests");
    }
    println!(
        "workload=http_hello n={} wall_ms={:.0} ns_per_op={:.1} rps={:.0} p50_us={:.0} p99_us={:.0} cpu_ns_per_req={:.0} wrk_cpu_pct={:.0} errors={} port={} rss_kb={}",
        r.requests,
        r.seconds * 1e3,
        1e9 / r.rps,
        r.rps,
        r.p50_us,
        r.p99_us,
        server_us * 1e3 / r.requests as f64,
        wrk_us / (r.seconds * 1e4),
        r.errors,
        port,
        vm_hwm_kb()
    );
    finish(rt);
}

/// Exit without dropping the runtime (WORKLOADS.md: teardown is excluded).
fn finish(rt: tokio::runtime::Runtime) -> ! {
    let _ = std::io::stdout().flush();
    std::mem::forget(rt);
    exit(0);
}

// ---- dispatch ----

struct Workload {
    name: &'static str,
    default_n: u64,
    run: fn(u64),
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "spawn_many",
        default_n: 1_000_000,
        run: spawn_many,
    },
    Workload {
        name: "spawn_many_remote",
        default_n: 1_000_000,
        run: spawn_many_remote,
    },
    Workload {
        name: "yield_many",
        default_n: 1000,
        run: yield_many,
    },
    Workload {
        name: "ping_pong",
        default_n: 1_000_000,
        run: ping_pong,
    },
    Workload {
        name: "chained_spawn",
        default_n: 1000,
        run: chained_spawn,
    },
    Workload {
        name: "fib_spawn",
        default_n: 25,
        run: fib_spawn,
    },
    Workload {
        name: "sleep_many",
        default_n: 1_000_000,
        run: sleep_many,
    },
    Workload {
        name: "idle_memory",
        default_n: 1_000_000,
        run: idle_memory,
    },
    Workload {
        name: "http_hello",
        default_n: 18080,
        run: http_hello,
    },
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
        eprintln!(
            "usage: {} <workload> [N]\nworkloads: {}",
            args[0],
            names.join(" ")
        );
        exit(2);
    }
    let Some(w) = WORKLOADS.iter().find(|w| w.name == args[1]) else {
        println!("workload={} unsupported=1", args[1]);
        exit(3);
    };
    let n = match args.get(2) {
        Some(s) => s.parse().unwrap_or(0),
        None => w.default_n,
    };
    if n == 0 {
        eprintln!("N must be positive");
        exit(2);
    }
    (w.run)(n);
}
