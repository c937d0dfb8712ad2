package chainfire_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/chainfire/chainfiretest"
)

// etcdctlPath finds Debian's etcdctl (package etcd-client). Without it the
// test is skipped, unless CI is set: CI must install it.
func etcdctlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("etcdctl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("etcdctl not found and CI is set: install it (apt-get install -y etcd-client): %v", err)
		}
		t.Skipf("etcdctl not found (apt-get install -y etcd-client to run this test): %v", err)
	}
	return p
}

// TestEtcdctlAgainstChainfire: the real etcd v3 client (Debian's etcdctl
// 3.4) puts, gets and watches against a chainfire member.
func TestEtcdctlAgainstChainfire(t *testing.T) {
	bin := etcdctlPath(t)
	ms := chainfiretest.Specs(t, "http", "ctl")
	chainfiretest.StartReady(t, chainfiretest.Config(t.TempDir(), ms[0], nil))
	endpoints := "--endpoints=" + ms[0].ClientURL

	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{endpoints, "--dial-timeout=5s", "--command-timeout=10s"}, args...)...)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("etcdctl %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}

	if v := run("version"); !strings.Contains(v, "etcdctl version") {
		t.Fatalf("etcdctl version: %q", v)
	}
	t.Logf("%s", strings.ReplaceAll(run("version"), "\n", "; "))

	// A watch started before the put sees it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := exec.CommandContext(ctx, bin, endpoints, "watch", "/greeting")
	watch.Env = append(os.Environ(), "ETCDCTL_API=3")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	defer func() {
		cancel()
		<-scanDone
		_ = watch.Wait()
	}()

	if out := run("put", "/greeting", "hello"); out != "OK" {
		t.Fatalf("put: %q", out)
	}
	if out := run("get", "/greeting", "--print-value-only"); out != "hello" {
		t.Fatalf("get: %q", out)
	}
	if out := run("endpoint", "health"); !strings.Contains(out, "is healthy") {
		t.Fatalf("endpoint health: %q", out)
	}
	// etcdctl watch prints: PUT, key, value. The watch may have connected
	// after the put; then put again until it reports one.
	var got []string
	deadline := time.After(20 * time.Second)
	for len(got) < 3 {
		select {
		case l := <-lines:
			got = append(got, l)
		case <-time.After(500 * time.Millisecond):
			if len(got) == 0 {
				run("put", "/greeting", "hello")
			}
		case <-deadline:
			t.Fatalf("etcdctl watch printed %q within 20s, want PUT /greeting hello", got)
		}
	}
	if got[0] != "PUT" || got[1] != "/greeting" || got[2] != "hello" {
		t.Fatalf("watch output %q", got)
	}
	if out := run("del", "/greeting"); out != "1" {
		t.Fatalf("del: %q", out)
	}
}
