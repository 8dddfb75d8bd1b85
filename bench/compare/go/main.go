// Go side of ../../shared/bench/WORKLOADS.md (see bench/compare/README.md).
//
//	go-bench <workload> [N]
//
// prints one line "workload=<name> n=<N> wall_ms=<x> ns_per_op=<y> [key=value ...]"
// on stdout; everything else goes to stderr.  Standard library only, so it
// builds offline (GOPROXY=off).
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
	"time"
)

const workers = 2

// vmHWMKB is the peak resident set size (VmHWM) of this process, in kB.
func vmHWMKB() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				v, _ := strconv.ParseUint(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}

func fail(workload, why string) {
	fmt.Fprintf(os.Stderr, "%s: FAILED: %s\n", workload, why)
	os.Exit(1)
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
	text, err := cmd.Output()
	ln.Close()
	if err != nil {
		fail("http_hello", fmt.Sprintf("wrk failed (is it installed?): %v\n%s", err, text))
	}
	r := parseWrk(text)
	if r.requests == 0 || r.rps <= 0 {
		fail("http_hello", "wrk completed no requests")
	}
	fmt.Printf("workload=http_hello n=%d wall_ms=%.0f ns_per_op=%.1f rps=%.0f p50_us=%.0f p99_us=%.0f errors=%d port=%d rss_kb=%d\n",
		r.requests, r.seconds*1e3, 1e9/r.rps, r.rps, r.p50us, r.p99us, r.errors, port, vmHWMKB())
}

// ---- dispatch ----

type workload struct {
	name     string
	defaultN uint64
	run      func(n uint64)
}

var workloads = []workload{
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
