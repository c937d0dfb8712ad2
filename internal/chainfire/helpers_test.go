package chainfire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

// testLogger discards logs unless CHAINFIRE_TEST_LOG is set (then etcd's
// and our messages go to stderr). Tests must not log through t after they
// end, and etcd logs from its own goroutines, so t.Log is not used.
func testLogger() *slog.Logger {
	if os.Getenv("CHAINFIRE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// memberSpec is one member of a test cluster.
type memberSpec struct {
	name                 string
	clientURL, peerURL   string
	clientPort, peerPort int
}

func specs(t *testing.T, scheme string, names ...string) []memberSpec {
	ports := testkit.FreePorts(t, 2*len(names))
	out := make([]memberSpec, len(names))
	for i, n := range names {
		cp, pp := ports[2*i], ports[2*i+1]
		out[i] = memberSpec{
			name:       n,
			clientPort: cp, peerPort: pp,
			clientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, cp),
			peerURL:   fmt.Sprintf("%s://127.0.0.1:%d", scheme, pp),
		}
	}
	return out
}

func initialCluster(ms []memberSpec) []string {
	var ic []string
	for _, m := range ms {
		ic = append(ic, m.name+"="+m.peerURL)
	}
	return ic
}

// testConfig is a loopback plaintext member with fast raft timing.
func testConfig(dir string, m memberSpec, ic []string) Config {
	c := Default()
	c.Name = m.name
	c.DataDir = dir
	c.ClientURL, c.PeerURL = m.clientURL, m.peerURL
	c.InitialCluster = ic
	c.AllowPlaintext = true
	c.HeartbeatInterval = 50 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.StartTimeout = 30 * time.Second
	c.ClusterToken = "test-token"
	return c
}

// member is a running (or stopped) Server in a test.
type member struct {
	srv    *Server
	cancel context.CancelFunc
	done   chan error
	err    error
	exited bool
}

// start runs cfg's member in the background; it is stopped at cleanup.
func start(t *testing.T, cfg Config) *member {
	t.Helper()
	srv, err := New(cfg, testLogger())
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- srv.Run(ctx) }()
	t.Cleanup(func() { m.stop(t) })
	return m
}

// startReady starts the member and waits until it is ready.
func startReady(t *testing.T, cfg Config) *member {
	t.Helper()
	m := start(t, cfg)
	m.waitReady(t)
	return m
}

func (m *member) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-m.srv.Ready():
	case err := <-m.done:
		m.exited, m.err = true, err
		t.Fatalf("member %s exited before ready: %v", m.srv.cfg.Name, err)
	case <-time.After(45 * time.Second):
		t.Fatalf("member %s not ready after 45s", m.srv.cfg.Name)
	}
}

// stop cancels the member and waits for Run to return; it returns Run's
// error. Stopping twice is fine.
func (m *member) stop(t *testing.T) error {
	t.Helper()
	if m.exited {
		return m.err
	}
	m.cancel()
	select {
	case m.err = <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("member %s did not stop within 30s of cancel", m.srv.cfg.Name)
	}
	m.exited = true
	return m.err
}

// waitExit waits for Run to return by itself.
func (m *member) waitExit(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case m.err = <-m.done:
		m.exited = true
		return m.err
	case <-time.After(within):
		t.Fatalf("member %s still running after %s", m.srv.cfg.Name, within)
		return nil
	}
}

// newClient returns a clientv3 client for endpoints, closed at cleanup.
func newClient(t *testing.T, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	cfg.Logger = zap.NewNop()
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("client for %v: %v", cfg.Endpoints, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// mustGet reads key serializably from exactly one member's endpoint.
func getFrom(t *testing.T, endpoint, key string) (string, error) {
	t.Helper()
	c := newClient(t, clientv3.Config{Endpoints: []string{endpoint}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, key, clientv3.WithSerializable())
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", errors.New("not found")
	}
	return string(resp.Kvs[0].Value), nil
}

func contains(err error, parts ...string) bool {
	if err == nil {
		return false
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			return false
		}
	}
	return true
}

func writeTestFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}
