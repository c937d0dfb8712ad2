// Command kvload drives a flaredb or etcd cluster with the closed-loop
// workload of the key-value benchmarks (package kvdriver) and reports
// throughput, p50/p99 latency and errors:
//
//	go run ./test/bench/kvload --system flaredb --endpoints 127.0.0.1:7711,... --cluster-id bench \
//	    --op put --clients 64 --ops 20000 --value-bytes 256
//	go run ./test/bench/kvload --system etcd --endpoints 127.0.0.1:2379,... --op get --clients 16 --duration 10s
//
// For --op get it first writes --keys keys (unless --preload=false) and then
// reads them linearizably, uniformly at random.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/ultracloud/ultracloud/test/bench/kvdriver"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("kvload", flag.ContinueOnError)
	system := fs.String("system", "flaredb", "system to drive: flaredb or etcd")
	endpoints := fs.String("endpoints", "", "comma-separated client addresses (host:port) of the members")
	clusterID := fs.String("cluster-id", "bench", "flaredb cluster ID")
	caFile := fs.String("cacert", "", "flaredb: the cluster CA (PEM) for TLS; empty: plaintext")
	certFile := fs.String("cert", "", "flaredb: client certificate (PEM) for TLS")
	keyFile := fs.String("key", "", "flaredb: client key (PEM) for TLS")
	op := fs.String("op", "put", "operation: put (fresh keys) or get (linearizable, of preloaded keys)")
	clients := fs.Int("clients", 16, "concurrent closed-loop clients")
	perConn := fs.Int("clients-per-conn", 4, "clients sharing one connection (one client of the system's Go client)")
	ops := fs.Int("ops", 0, "total operations (default 20000 unless --duration is set)")
	duration := fs.Duration("duration", 0, "run for this long instead of a number of operations")
	valueBytes := fs.Int("value-bytes", 256, "value size of puts and preloaded keys")
	keys := fs.Int("keys", 1000, "keys preloaded for --op get")
	preload := fs.Bool("preload", true, "write the --keys keys before a get run")
	output := fs.String("o", "table", "output: table or json")
	cpuProfile := fs.String("cpuprofile", "", "write the driver's CPU profile of the measured run to this file")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *endpoints == "" {
		fmt.Fprintln(os.Stderr, "kvload: --endpoints is required")
		return 2
	}
	if *ops == 0 && *duration == 0 {
		*ops = 20000
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintln(os.Stderr, "kvload: -o must be table or json")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	conns := (*clients + max(*perConn, 1) - 1) / max(*perConn, 1)
	t, err := kvdriver.Dial(ctx, kvdriver.Config{System: *system, Endpoints: strings.Split(*endpoints, ","), ClusterID: *clusterID,
		CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile, Conns: conns}, 30*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvload:", err)
		return 1
	}
	defer t.Close()
	value := kvdriver.Value(*valueBytes)
	if *op == "get" && *preload {
		if err := t.Preload(ctx, *keys, value); err != nil {
			fmt.Fprintln(os.Stderr, "kvload:", err)
			return 1
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kvload:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "kvload:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	r, err := t.Run(ctx, kvdriver.Load{Op: *op, Clients: *clients, Ops: *ops, Duration: *duration, Value: value, Keys: *keys})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvload:", err)
		return 1
	}
	if *output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	} else {
		fmt.Printf("%-8s %-4s %7s %9s %10s %10s %10s %7s\n", "SYSTEM", "OP", "CLIENTS", "OPS", "OPS/S", "P50(us)", "P99(us)", "ERRORS")
		fmt.Printf("%-8s %-4s %7d %9d %10.0f %10d %10d %7d\n", r.System, r.Op, r.Clients, r.Ops, r.OpsPerS, r.P50.Microseconds(), r.P99.Microseconds(), r.Errors)
		if r.FirstErr != "" {
			fmt.Printf("first error: %s\n", r.FirstErr)
		}
	}
	if r.Errors > 0 {
		return 1
	}
	return 0
}
