//! Tokio side of ../../shared/bench/WORKLOADS.md (see bench/compare/README.md).
//!
//!     tokio-bench <workload> [N]
//!
//! prints one line `workload=<name> n=<N> wall_ms=<x> ns_per_op=<y> [key=value ...]`
//! on stdout; everything else goes to stderr.  Each workload builds its own
//! runtime (2 workers), and the process `exit`s without dropping it.

use std::io::Write;
use std::process::exit;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WORKERS: usize = 2;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Peak resident set size (VmHWM) of this process, in kB.
fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn fail(workload: &str, why: &str) -> ! {
    eprintln!("{workload}: FAILED: {why}");
    exit(1);
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
            r.seconds = words[3].trim_end_matches(',').trim_end_matches('s').parse().unwrap_or(0.0);
        } else if let Some(v) = p.strip_prefix("Socket errors:") {
            // " connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                r.errors += part.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0u64);
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
    let text = rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port as u16))
            .await
            .unwrap_or_else(|e| fail("http_hello", &format!("listen: {e}")));
        let acceptor = tokio::spawn(http_accept_loop(listener));
        let url = format!("http://127.0.0.1:{port}/");
        let out = tokio::process::Command::new("wrk")
            .args(["-t1", "-c64", "-d5s", "--latency", &url])
            .stderr(std::process::Stdio::inherit())
            .output()
            .await;
        acceptor.abort();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => fail(
                "http_hello",
                &format!("wrk exited with {}\n{}", o.status, String::from_utf8_lossy(&o.stdout)),
            ),
            Err(e) => fail("http_hello", &format!("cannot run wrk (is it installed?): {e}")),
        }
    });
    let r = parse_wrk(&text);
    if r.requests == 0 || r.rps <= 0.0 {
        fail("http_hello", "wrk completed no requests");
    }
    println!(
        "workload=http_hello n={} wall_ms={:.0} ns_per_op={:.1} rps={:.0} p50_us={:.0} p99_us={:.0} errors={} port={} rss_kb={}",
        r.requests,
        r.seconds * 1e3,
        1e9 / r.rps,
        r.rps,
        r.p50_us,
        r.p99_us,
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

const WORKLOADS: &[Workload] = &[Workload { name: "http_hello", default_n: 18080, run: http_hello }];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
        eprintln!("usage: {} <workload> [N]\nworkloads: {}", args[0], names.join(" "));
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
