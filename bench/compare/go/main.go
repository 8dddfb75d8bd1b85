// Go side of ../../shared/bench/WORKLOADS.md (see bench/compare/README.md).
//
//	go-bench <workload> [N]
//
// prints one line "workload=<name> n=<N> wall_ms=<x> ns_per_op=<y> [key=value ...]"
// on stdout (always ending in rss_kb=<VmHWM>); everything else goes to
// stderr.  A failed check exits 1; a workload it lacks prints
// "workload=<name> unsupported=1" and exits 3.  Standard library only, so it
// builds offline (GOPROXY=off).
//
// GOMAXPROCS(2).  The driver (WORKLOADS.md, "Rules common to all workloads")
// is the main goroutine: t0 is taken just before it starts the workload and
// the end when it has the result.  A join handle is a sync.WaitGroup (plus a
// result slot where the task returns a value) or, in fib_spawn, a channel of
// capacity 1.  Counters are package globals updated with sync/atomic.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const workers = 2

// statusKB is a field of /proc/self/status such as VmHWM or VmRSS, in kB.
func statusKB(key string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key+":") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				v, _ := strconv.ParseUint(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}

// vmHWMKB is the peak resident set size (VmHWM) of this process, in kB.
func vmHWMKB() uint64 { return statusKB("VmHWM") }

func fail(workload, why string) {
	fmt.Fprintf(os.Stderr, "%s: FAILED: %s\n", workload, why)
	os.Exit(1)
}

// report prints the result line: ns_per_op = wall / ops, then the
// workload's own key=value pairs (extra, may be empty), then rss_kb (VmHWM).
func report(name string, n uint64, wall time.Duration, ops uint64, extra string) {
	if extra != "" {
		extra = " " + extra
	}
	ns := float64(wall.Nanoseconds())
	fmt.Printf("workload=%s n=%d wall_ms=%.3f ns_per_op=%.1f%s rss_kb=%d\n",
		name, n, ns/1e6, ns/float64(ops), extra, vmHWMKB())
}

// counter is the process-global counter of spawn_many.
var counter atomic.Uint64

// ---- spawn_many ----

// spawnMany: N goroutines, each counts itself and stores its index in its
// result slot; the driver waits for all of them, then sums the slots.
func spawnMany(n uint64) {
	t0 := time.Now()
	results := make([]uint64, n)
	var wg sync.WaitGroup
	wg.Add(int(n))
	for i := uint64(0); i < n; i++ {
		go func(i uint64) {
			counter.Add(1)
			results[i] = i
			wg.Done()
		}(i)
	}
	wg.Wait()
	var sum uint64
	for _, v := range results {
		sum += v
	}
	wall := time.Since(t0)
	if sum != n*(n-1)/2 || counter.Load() != n {
		fail("spawn_many", fmt.Sprintf("sum %d, counter %d", sum, counter.Load()))
	}
	report("spawn_many", n, wall, n, "")
}

// ---- spawn_many_remote ----

// spawnManyRemote: Go cannot spawn from outside its scheduler, so this is
// WORKLOADS.md's Go version: batches of 10,000 empty goroutines spawned by
// the main goroutine, wg.Wait() after each batch ("batched spawn of empty
// tasks", not a remote spawn).
func spawnManyRemote(n uint64) {
	const batch = 10000
	t0 := time.Now()
	var wg sync.WaitGroup
	done := uint64(0)
	for done < n {
		b := n - done
		if b > batch {
			b = batch
		}
		wg.Add(int(b))
		for i := uint64(0); i < b; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
		done += b
	}
	wall := time.Since(t0)
	if done != n {
		fail("spawn_many_remote", "task count")
	}
	report("spawn_many_remote", n, wall, n, "")
}

// ---- yield_many ----

const yields = 1000

// yieldMany: N goroutines each call runtime.Gosched() 1,000 times and return
// 1,000 (into their result slot); the driver waits for all and sums.
func yieldMany(n uint64) {
	t0 := time.Now()
	results := make([]uint64, n)
	var wg sync.WaitGroup
	wg.Add(int(n))
	for i := uint64(0); i < n; i++ {
		go func(i uint64) {
			for j := 0; j < yields; j++ {
				runtime.Gosched()
			}
			results[i] = yields
			wg.Done()
		}(i)
	}
	wg.Wait()
	var total uint64
	for _, v := range results {
		total += v
	}
	wall := time.Since(t0)
	if total != n*yields {
		fail("yield_many", fmt.Sprintf("total %d", total))
	}
	report("yield_many", n, wall, n*yields, "")
}

// ---- ping_pong ----

// pingPong: two channels of capacity 1; the echo goroutine returns on B
// what it receives on A until A is closed; the main goroutine is the driver.
func pingPong(n uint64) {
	t0 := time.Now()
	a := make(chan int64, 1)
	b := make(chan int64, 1)
	echoDone := make(chan struct{})
	go func() {
		for v := range a {
			b <- v
		}
		close(echoDone)
	}()
	var acc int64
	for i := int64(0); i < int64(n); i++ {
		a <- i
		acc += <-b
	}
	close(a)
	<-echoDone
	wall := time.Since(t0)
	if uint64(acc) != n*(n-1)/2 {
		fail("ping_pong", fmt.Sprintf("sum %d", acc))
	}
	report("ping_pong", n, wall, n, "")
}

// ---- chained_spawn ----

const chainDepth = 1000

// chain spawns a goroutine that signals done if k == 1, else calls chain(k-1).
func chain(k int, done chan<- struct{}) {
	go func() {
		if k == 1 {
			done <- struct{}{}
		} else {
			chain(k-1, done)
		}
	}()
}

func chainedSpawn(n uint64) {
	var chains uint64
	t0 := time.Now()
	for i := uint64(0); i < n; i++ {
		done := make(chan struct{}, 1)
		chain(chainDepth, done)
		<-done
		chains++
	}
	wall := time.Since(t0)
	if chains != n {
		fail("chained_spawn", "chains completed")
	}
	report("chained_spawn", n, wall, n*chainDepth, "")
}

// ---- fib_spawn ----

// fib spawns fib(n-1) as a goroutine whose join handle is a 1-buffered
// channel, computes fib(n-2) inline, and adds the two.
func fib(n uint64) uint64 {
	if n < 2 {
		return n
	}
	h := make(chan uint64, 1)
	go func() { h <- fib(n - 1) }()
	b := fib(n - 2)
	return <-h + b
}

func fibPlain(n uint64) uint64 {
	if n < 2 {
		return n
	}
	return fibPlain(n-1) + fibPlain(n-2)
}

func fibSpawn(n uint64) {
	t0 := time.Now()
	r := fib(n)
	wall := time.Since(t0)
	if r != fibPlain(n) {
		fail("fib_spawn", fmt.Sprintf("fib(%d) = %d", n, r))
	}
	report("fib_spawn", n, wall, fibPlain(n+1)-1, "")
}

// ---- sleep_many ----

// xorshift64 with the state and output of WORKLOADS.md.
type xorshift uint64

func (s *xorshift) next() uint64 {
	x := uint64(*s)
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	*s = xorshift(x)
	return x
}

var lateSum, lateMax atomic.Int64 // nanoseconds

// sleepMany: N goroutines; goroutine i sleeps d_i ms from when it first runs
// and records how late it woke.
func sleepMany(n uint64) {
	s := xorshift(42)
	for _, want := range []uint64{278, 59, 625, 115, 676, 471, 86, 730} {
		if s.next()%1001 != want {
			fail("sleep_many", "duration generator")
		}
	}
	t0 := time.Now()
	s = xorshift(42)
	var sum uint64
	var wg sync.WaitGroup
	wg.Add(int(n))
	for i := uint64(0); i < n; i++ {
		d := s.next() % 1001
		sum += d
		go func(d time.Duration) {
			deadline := time.Now().Add(d)
			time.Sleep(time.Until(deadline))
			late := time.Since(deadline)
			if late < 0 {
				late = 0
			}
			lateSum.Add(int64(late))
			for m := lateMax.Load(); int64(late) > m && !lateMax.CompareAndSwap(m, int64(late)); m = lateMax.Load() {
			}
			wg.Done()
		}(time.Duration(d) * time.Millisecond)
	}
	wg.Wait()
	wall := time.Since(t0)
	if n == 1000000 && sum != 500416189 {
		fail("sleep_many", fmt.Sprintf("sum of durations %d", sum))
	}
	report("sleep_many", n, wall, n, fmt.Sprintf("rss_peak_kb=%d late_mean_us=%.1f late_max_us=%.1f",
		vmHWMKB(), float64(lateSum.Load())/float64(n)/1e3, float64(lateMax.Load())/1e3))
}

// ---- idle_memory ----

var started, resleeps atomic.Uint64

// idleMemory: N goroutines, no handle kept; each counts itself as started,
// then sleeps S ms again and again until all N have started.  The WaitGroup
// is the "remaining" countdown: the last wg.Done() releases the driver.
func idleMemory(n uint64) {
	sleepMS := uint64(3000)
	if s := os.Getenv("ANCHOR_IDLE_SLEEP_MS"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			fail("idle_memory", "bad ANCHOR_IDLE_SLEEP_MS")
		}
		sleepMS = v
	}
	sleep := time.Duration(sleepMS) * time.Millisecond
	base := statusKB("VmRSS")
	t0 := time.Now()
	var wg sync.WaitGroup
	wg.Add(int(n))
	for i := uint64(0); i < n; i++ {
		go func() {
			started.Add(1)
			for {
				time.Sleep(sleep)
				if started.Load() == n {
					break
				}
				resleeps.Add(1)
			}
			wg.Done()
		}()
	}
	spawn := time.Since(t0)
	wg.Wait()
	wall := time.Since(t0)
	peak := vmHWMKB()
	if started.Load() != n {
		fail("idle_memory", "started count")
	}
	report("idle_memory", n, wall, n, fmt.Sprintf(
		"rss_base_kb=%d rss_peak_kb=%d bytes_per_task=%.0f spawn_ms=%.3f resleeps=%d sleep_ms=%d",
		base, peak, float64(peak-base)*1024/float64(n), float64(spawn.Nanoseconds())/1e6,
		resleeps.Load(), sleepMS))
}

// ---- http_hello ----

var response = []byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!")
var crlf2 = []byte("\r\n\r\n")

// httpConn serves one connection: after each read, it answers every
// complete request in the buffer with one write, and keeps what follows the
// last one.
func httpConn(c net.Conn) {
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true) // Go's default; explicit as in the others
	buf := make([]byte, 4096)
	out := make([]byte, 0, 4096)
	n := 0
	for {
		r, err := c.Read(buf[n:])
		if r <= 0 || err != nil {
			return
		}
		n += r
		start := 0
		for {
			i := bytes.Index(buf[start:n], crlf2)
			if i < 0 {
				break
			}
			out = append(out, response...)
			start += i + 4
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil { // net.Conn.Write writes all
				return
			}
			out = out[:0]
		}
		n = copy(buf, buf[start:n])
		if n == len(buf) {
			bigger := make([]byte, 2*len(buf))
			copy(bigger, buf[:n])
			buf = bigger
		}
	}
}

func httpAcceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				time.Sleep(10 * time.Millisecond) // out of descriptors: let connections end
				continue
			}
			return // the listener was closed
		}
		go httpConn(c)
	}
}

type wrkResult struct {
	requests, errors           uint64
	seconds, rps, p50us, p99us float64
}

// wrkUS converts a wrk latency figure such as "1.20ms" to microseconds.
func wrkUS(s string) float64 {
	s = strings.TrimSpace(s)
	mult := 0.0
	switch {
	case strings.HasSuffix(s, "us"):
		s, mult = s[:len(s)-2], 1
	case strings.HasSuffix(s, "ms"):
		s, mult = s[:len(s)-2], 1e3
	case strings.HasSuffix(s, "s"):
		s, mult = s[:len(s)-1], 1e6
	default:
		return -1
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return v * mult
}

func parseWrk(text []byte) wrkResult {
	var r wrkResult
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		p := strings.TrimLeft(sc.Text(), " \t")
		f := strings.Fields(p)
		switch {
		case strings.HasPrefix(p, "50%"):
			r.p50us = wrkUS(p[3:])
		case strings.HasPrefix(p, "99%"):
			r.p99us = wrkUS(p[3:])
		case strings.Contains(p, "requests in") && len(f) >= 4:
			r.requests, _ = strconv.ParseUint(f[0], 10, 64)
			r.seconds, _ = strconv.ParseFloat(strings.TrimSuffix(strings.TrimSuffix(f[3], ","), "s"), 64)
		case strings.HasPrefix(p, "Socket errors:"):
			for _, part := range strings.Split(strings.TrimPrefix(p, "Socket errors:"), ",") {
				if pf := strings.Fields(part); len(pf) == 2 {
					v, _ := strconv.ParseUint(pf[1], 10, 64)
					r.errors += v
				}
			}
		case strings.HasPrefix(p, "Non-2xx or 3xx responses:"):
			v, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(p, "Non-2xx or 3xx responses:")), 10, 64)
			r.errors += v
		case strings.HasPrefix(p, "Requests/sec:"):
			r.rps, _ = strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(p, "Requests/sec:")), 64)
		}
	}
	return r
}

// httpHello serves 127.0.0.1:port while wrk, a child process, loads it for 5 s.
// The driver is the main goroutine.
func httpHello(port uint64) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		fail("http_hello", "listen: "+err.Error())
	}
	go httpAcceptLoop(ln)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	cmd := exec.Command("wrk", "-t1", "-c64", "-d5s", "--latency", url)
	cmd.Stderr = os.Stderr
	cpu0 := selfCPUMicros()
	text, err := cmd.Output()
	serverUs := selfCPUMicros() - cpu0
	ln.Close()
	if err != nil {
		fail("http_hello", fmt.Sprintf("wrk failed (is it installed?): %v\n%s", err, text))
	}
	r := parseWrk(text)
	if r.requests == 0 || r.rps <= 0 {
		fail("http_hello", "wrk completed no requests")
	}
	wrkUs := float64((cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Microseconds())
	fmt.Printf("workload=http_hello n=%d wall_ms=%.0f ns_per_op=%.1f rps=%.0f p50_us=%.0f p99_us=%.0f cpu_ns_per_req=%.0f wrk_cpu_pct=%.0f errors=%d port=%d rss_kb=%d\n",
		r.requests, r.seconds*1e3, 1e9/r.rps, r.rps, r.p50us, r.p99us, serverUs*1e3/float64(r.requests),
		wrkUs/(r.seconds*1e4), r.errors, port, vmHWMKB())
}

// selfCPUMicros is this process's CPU time so far, user + system, every thread.
func selfCPUMicros() float64 {
	var u syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &u) != nil {
		return 0
	}
	return float64(u.Utime.Sec+u.Stime.Sec)*1e6 + float64(u.Utime.Usec+u.Stime.Usec)
}

// ---- dispatch ----

type workload struct {
	name     string
	defaultN uint64
	run      func(n uint64)
}

var workloads = []workload{
	{"spawn_many", 1000000, spawnMany},
	{"spawn_many_remote", 1000000, spawnManyRemote},
	{"yield_many", 1000, yieldMany},
	{"ping_pong", 1000000, pingPong},
	{"chained_spawn", 1000, chainedSpawn},
	{"fib_spawn", 25, fibSpawn},
	{"sleep_many", 1000000, sleepMany},
	{"idle_memory", 1000000, idleMemory},
	{"http_hello", 18080, httpHello},
}

func main() {
	runtime.GOMAXPROCS(workers)
	if len(os.Args) < 2 {
		var names []string
		for _, w := range workloads {
			names = append(names, w.name)
		}
		fmt.Fprintf(os.Stderr, "usage: %s <workload> [N]\nworkloads: %s\n", os.Args[0], strings.Join(names, " "))
		os.Exit(2)
	}
	for _, w := range workloads {
		if w.name != os.Args[1] {
			continue
		}
		n := w.defaultN
		if len(os.Args) > 2 {
			n, _ = strconv.ParseUint(os.Args[2], 10, 64)
		}
		if n == 0 {
			fmt.Fprintln(os.Stderr, "N must be positive")
			os.Exit(2)
		}
		w.run(n)
		os.Exit(0)
	}
	fmt.Printf("workload=%s unsupported=1\n", os.Args[1])
	os.Exit(3)
}
