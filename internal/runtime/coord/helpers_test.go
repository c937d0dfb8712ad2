package coord

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/runtime/coord/coordtest"
)

// The tests run against real etcd members embedded in the test process
// (coord must not depend on the chainfire component, so coordtest starts
// embed directly), and fake the network with coordtest's Proxy.

func testLogger() *slog.Logger {
	if os.Getenv("COORD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// recordingHandler keeps the messages of every log record, for tests that
// check a code path was taken.
type recordingHandler struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newRecordingLogger() (*slog.Logger, func() []string) {
	h := recordingHandler{mu: &sync.Mutex{}, msgs: &[]string{}}
	return slog.New(h), func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return append([]string(nil), *h.msgs...)
	}
}

func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.msgs = append(*h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}
func (h recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordingHandler) WithGroup(string) slog.Handler      { return h }

func newCoord(t *testing.T, endpoint string) (*Client, *clientv3.Client) {
	raw := coordtest.NewClient(t, endpoint)
	return New(raw, testLogger()), raw
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitDone waits for ctx to end within d and returns its cause.
func waitDone(t *testing.T, ctx context.Context, d time.Duration, what string) error {
	t.Helper()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(d):
		t.Fatalf("%s: context not cancelled within %s", what, d)
		return nil
	}
}
