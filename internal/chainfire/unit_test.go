package chainfire

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestZapMessagesReachSlog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	closing := new(atomic.Bool)
	z := newZapLogger(log, zapcore.WarnLevel, closing).With(zap.String("member", "m1"))
	z.Info("quiet below warn")
	z.Warn("lost TCP streaming connection", zap.String("remote-peer-id", "abc"), zap.Int("count", 3))
	z.Error("boom", zap.Error(errors.New("disk full")))
	out := buf.String()
	if strings.Contains(out, "quiet below warn") {
		t.Fatalf("info passed the warn level:\n%s", out)
	}
	for _, want := range []string{
		`level=WARN msg="lost TCP streaming connection" member=m1 count=3 remote-peer-id=abc`,
		`level=ERROR msg=boom member=m1 error="disk full"`,
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("log output lacks %q:\n%s", want, out)
		}
	}
	// While the member closes, etcd's errors about its own closed
	// listeners become debug records.
	buf.Reset()
	closing.Store(true)
	z.Error("setting up serving failed", zap.Error(errors.New("use of closed network connection")))
	if out := buf.String(); !strings.Contains(out, `level=DEBUG msg="setting up serving failed"`) {
		t.Fatalf("error while closing not downgraded:\n%s", out)
	}
}

func TestGuardOnlyBindsInitializedDirectories(t *testing.T) {
	dir := t.TempDir()
	// A first start that failed before etcd wrote anything does not bind
	// the directory: a corrected config may use it.
	if err := checkGuard(dir, "T1", "m1"); err != nil {
		t.Fatal(err)
	}
	if err := checkGuard(dir, "T2", "m2"); err != nil {
		t.Fatalf("uninitialized directory refused: %v", err)
	}
	// Once etcd has a write-ahead log there, the recorded identity holds.
	if err := os.MkdirAll(filepath.Join(dir, "member", "wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "member", "wal", "0.wal"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkGuard(dir, "T2", "m2"); err != nil {
		t.Fatalf("same identity refused: %v", err)
	}
	if err := checkGuard(dir, "T1", "m2"); !errors.Is(err, ErrWrongCluster) {
		t.Fatalf("other token accepted: %v", err)
	}
	if err := confirmGuard(dir, "T2", "m2", "c1", "a1"); err != nil {
		t.Fatal(err)
	}
	if err := confirmGuard(dir, "T2", "m2", "c2", "a1"); !errors.Is(err, ErrWrongCluster) || !contains(err, "cluster ID c1", "now belongs to cluster ID c2") {
		t.Fatalf("replaced member data accepted: %v", err)
	}
	// A damaged guard is reported, not ignored.
	if err := os.WriteFile(filepath.Join(dir, GuardFileName), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkGuard(dir, "T2", "m2"); !contains(err, "is damaged") {
		t.Fatalf("damaged guard: %v", err)
	}
}

func TestGenerateCARefusesHalfACA(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := GenerateCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	// Idempotent while both files exist.
	if c2, k2, err := GenerateCA(dir, "ca"); err != nil || c2 != cert || k2 != key {
		t.Fatalf("second GenerateCA: %v %v %v", c2, k2, err)
	}
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GenerateCA(dir, "ca"); !contains(err, "incomplete") {
		t.Fatalf("half a CA: %v", err)
	}
	// A CA key that does not match the certificate is refused.
	other := t.TempDir()
	_, otherKey, err := GenerateCA(other, "other")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := issueMemberCert(cert, otherKey, t.TempDir(), "m", nil); !contains(err, "does not belong to certificate") {
		t.Fatalf("mismatched CA key: %v", err)
	}
}
