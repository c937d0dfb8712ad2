//go:build linux

// Command devcluster runs a multi-host UltraCloud cluster on this machine
// for people: every host a network namespace running the real binary (see
// package harness). The cluster outlives the command.
//
//	go run ./test/harness/devcluster up --hosts 3
//	go run ./test/harness/devcluster status
//	go run ./test/harness/devcluster down
//	go run ./test/harness/devcluster sweep
//
// It needs root, iproute2 and nftables. State lives in
// /run/ultracloud-harness/<name>.json, node directories under
// /tmp/ultracloud-devcluster-<name> unless --dir says otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ultracloud/ultracloud/test/harness"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: devcluster <command> [flags]

commands:
  up      create a cluster and leave it running
  status  show each host's process and /readyz (exit 1 unless all ready)
  down    stop the processes and remove namespaces, state and (unless --keep-data) data
  sweep   remove leftovers of crashed test runs (never a detached cluster)

Run "devcluster <command> -h" for its flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "devcluster: needs root (network namespaces, nftables): run it with sudo -E")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "up":
		err = up(ctx, args[1:], stdout, stderr)
	case "status":
		var ready bool
		ready, err = status(ctx, args[1:], stdout, stderr)
		if err == nil && !ready {
			return 1
		}
	case "down":
		err = down(args[1:], stdout, stderr)
	case "sweep":
		err = sweep(ctx, stdout)
	default:
		fmt.Fprintf(stderr, "devcluster: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "devcluster: %v\n", err)
		return 1
	}
	return 0
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("devcluster "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func up(ctx context.Context, args []string, stdout, stderr io.Writer) (rerr error) {
	fs := newFlags("up", stderr)
	name := fs.String("name", "dev", "cluster name")
	hosts := fs.Int("hosts", 3, "number of hosts (host1..hostN)")
	subnet := fs.String("subnet", "10.99.0.0/24", "underlay subnet")
	external := fs.String("external", "", "also attach every host to an \"external\" network with this subnet, e.g. 10.98.0.0/24")
	roles := fs.String("roles", "", "comma-separated roles for every node (default: all)")
	binary := fs.String("binary", "", "ultracloud binary to run (default: build ./cmd/ultracloud into the cluster's directory)")
	dir := fs.String("dir", "", "directory for node configs, data and logs (default /tmp/ultracloud-devcluster-<name>)")
	logLevel := fs.String("log-level", "info", "nodes' log level")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait for every node to be ready")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("up: unexpected arguments %v", fs.Args())
	}
	spec := harness.Spec{Name: *name, Subnet: *subnet, LogLevel: *logLevel}
	for i := 1; i <= *hosts; i++ {
		hs := harness.HostSpec{Name: fmt.Sprintf("host%d", i)}
		if *roles != "" {
			hs.Roles = strings.Split(*roles, ",")
		}
		spec.HostList = append(spec.HostList, hs)
	}
	if *hosts < 1 {
		return fmt.Errorf("up: --hosts %d: want at least 1", *hosts)
	}
	if *external != "" {
		spec.Networks = append(spec.Networks, harness.NetworkSpec{Name: "external", Subnet: *external})
	}
	if _, err := os.Stat(filepath.Join(harness.StateDir, *name+".json")); err == nil {
		return fmt.Errorf("up: cluster %q exists already: see `devcluster status --name %s`, or take it down with `devcluster down --name %s`", *name, *name, *name)
	}
	if *dir == "" {
		*dir = filepath.Join(os.TempDir(), "ultracloud-devcluster-"+*name)
	}
	// A failed or interrupted up leaves nothing behind: the harness removes
	// what it made, and this removes the directory if up made it.
	if _, err := os.Stat(*dir); errors.Is(err, os.ErrNotExist) {
		defer func() {
			if rerr != nil {
				_ = os.RemoveAll(*dir)
			}
		}()
	}
	if *binary == "" {
		root, err := harness.ModuleRoot(ctx)
		if err != nil {
			return err
		}
		*binary = filepath.Join(*dir, "bin", "ultracloud")
		fmt.Fprintf(stderr, "building %s ...\n", *binary)
		if err := harness.BuildBinary(ctx, root, *binary); err != nil {
			return err
		}
	}
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	c, err := harness.Create(ctx, spec, harness.Options{
		Binary:       *binary,
		WorkDir:      *dir,
		Detached:     true,
		ReadyTimeout: *timeout,
		Logf:         logf,
	})
	if err != nil {
		return err
	}
	sw := c.SwitchNamespace()
	h1 := c.Hosts()[0]
	fmt.Fprintf(stdout, "\nCluster %q is up: %d hosts, namespaces %s*, state %s\n\n", c.Name(), len(c.Hosts()), c.Prefix(), c.StatePath())
	for _, h := range c.Hosts() {
		fmt.Fprintf(stdout, "%-8s %s   (pid %d)\n", h.Name(), h.URL(), h.PID())
		fmt.Fprintf(stdout, "  token: %s\n", h.TokenPath())
		fmt.Fprintf(stdout, "  enter: ip netns exec %s bash\n", h.Namespace())
		fmt.Fprintf(stdout, "  log:   %s\n", h.LogPath())
		if a, ok := h.AddrOn("external"); ok {
			fmt.Fprintf(stdout, "  external address: %s\n", a)
		}
	}
	fmt.Fprintf(stdout, `
The hosts' addresses exist only inside the cluster's namespaces (nothing is
routed from this machine's own network). Run clients inside the switch
namespace %s, which sits on every network, e.g.:

  ip netns exec %s curl -H "Authorization: Bearer $(cat %s)" %s/v1/status
  ip netns exec %s %s --endpoint %s --token "$(cat %s)" get projects

Status: go run ./test/harness/devcluster status --name %s
Down:   go run ./test/harness/devcluster down --name %s
`, sw, sw, h1.TokenPath(), h1.URL(), sw, *binary, h1.URL(), h1.TokenPath(), c.Name(), c.Name())
	return nil
}

func status(ctx context.Context, args []string, stdout, stderr io.Writer) (bool, error) {
	fs := newFlags("status", stderr)
	name := fs.String("name", "dev", "cluster name")
	if err := fs.Parse(args); err != nil {
		return false, err
	}
	c, err := harness.Load(*name)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(stdout, "cluster %q: namespaces %s*, work dir %s\n", c.Name(), c.Prefix(), c.WorkDir())
	allReady := true
	for _, h := range c.Hosts() {
		st := h.State()
		ready := "-"
		if st.Alive() {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			code, body, err := h.Get(pctx, "/readyz")
			cancel()
			switch {
			case err != nil:
				ready = "unreachable: " + err.Error()
			case code == 200:
				ready = "ready"
			default:
				ready = fmt.Sprintf("%d %s", code, body)
			}
		}
		if ready != "ready" {
			allReady = false
		}
		fmt.Fprintf(stdout, "%-8s %-22s %-28s readyz: %s\n", h.Name(), h.URL(), st, ready)
	}
	return allReady, nil
}

func down(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("down", stderr)
	name := fs.String("name", "dev", "cluster name")
	keep := fs.Bool("keep-data", false, "keep the node directories (configs, data, logs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := harness.Load(*name)
	if err != nil {
		return err
	}
	// Teardown runs to the end even on Ctrl-C: a half-removed cluster is
	// worse than a slow one.
	if err := c.Close(); err != nil {
		return err
	}
	if !*keep {
		if err := os.RemoveAll(c.WorkDir()); err != nil {
			return fmt.Errorf("removing %s: %w", c.WorkDir(), err)
		}
	}
	fmt.Fprintf(stdout, "cluster %q is down\n", c.Name())
	return nil
}

func sweep(ctx context.Context, stdout io.Writer) error {
	rep, err := harness.Sweep(ctx)
	fmt.Fprintln(stdout, rep)
	return err
}
