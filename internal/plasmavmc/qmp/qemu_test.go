package qmp

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

// requireQEMU finds qemu-system-x86_64, or skips (fails under CI, where the
// test command installs it).
func requireQEMU(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if v := strings.ToLower(os.Getenv("CI")); v != "" && v != "0" && v != "false" {
			t.Fatal("qmp: qemu-system-x86_64 not found and CI is set: apt-get install -y qemu-system-x86")
		}
		t.Skip("qmp: qemu-system-x86_64 not found: apt-get install -y qemu-system-x86")
	}
	return bin
}

// startQEMU runs a QEMU with no machine at all (-M none: no guest, no CPU
// time) whose QMP is on a Unix socket, and kills it at cleanup.
func startQEMU(t *testing.T) (sock string, exitErr func() error, exited <-chan struct{}) {
	t.Helper()
	bin := requireQEMU(t)
	dir, err := os.MkdirTemp("", "qmp-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "qmp.sock")
	cmd := exec.Command(bin, "-M", "none", "-nodefaults", "-no-user-config", "-display", "none",
		"-chardev", "socket,id=qmp,path="+sock+",server=on,wait=off", "-mon", "chardev=qmp,mode=control")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(ch) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-ch
		if t.Failed() {
			t.Logf("qemu stderr: %s", stderr.String())
		}
	})
	testkit.Eventually(t, 10*time.Second, "QEMU's QMP socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	return sock, func() error { <-ch; return werr }, ch
}

func TestAgainstRealQEMU(t *testing.T) {
	sock, exitErr, exited := startQEMU(t)
	ctx := ctxFor(t, 30*time.Second)
	c, err := Dial(ctx, sock, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Greeting().Version.QEMU.Major < 7 {
		t.Fatalf("greeting %+v", c.Greeting())
	}

	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status == "" {
		t.Fatalf("query-status: %+v", st)
	}

	// The schema is far larger than the 64 KiB that go-qemu caps replies at.
	var schema []json.RawMessage
	if err := c.Execute(ctx, "query-qmp-schema", nil, &schema); err != nil {
		t.Fatal(err)
	}
	if n, _ := json.Marshal(schema); len(schema) < 100 || len(n) < 64<<10 {
		t.Fatalf("query-qmp-schema: %d entries, %d bytes", len(schema), len(n))
	}

	err = c.Execute(ctx, "no-such-command", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("unknown command: %v, want CommandNotFound", err)
	}
	err = c.Execute(ctx, "block_resize", map[string]any{"device": "nope", "size": 1 << 20}, nil)
	if !errors.As(err, &qe) || qe.Desc == "" {
		t.Fatalf("block_resize of a missing device: %v, want a typed error", err)
	}

	before := time.Now().Add(-time.Minute)
	if err := c.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"STOP", "RESUME"} {
		select {
		case ev := <-c.Events():
			if ev.Name != want || ev.Time.Before(before) {
				t.Fatalf("event %s at %v, want %s", ev.Name, ev.Time, want)
			}
		case <-ctx.Done():
			t.Fatalf("no %s event", want)
		}
	}

	// quit: SHUTDOWN arrives, then the connection ends and QEMU exits 0.
	if err := c.Execute(ctx, "quit", nil, nil); err != nil && !errors.Is(err, ErrConnectionLost) {
		t.Fatal(err)
	}
	var sawShutdown bool
	for ev := range c.Events() {
		if ev.Name == "SHUTDOWN" {
			var d struct {
				Guest  bool   `json:"guest"`
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			if d.Guest || d.Reason != "host-qmp-quit" {
				t.Fatalf("SHUTDOWN %s", ev.Data)
			}
			sawShutdown = true
		}
	}
	if !sawShutdown {
		t.Fatal("no SHUTDOWN event before the connection ended")
	}
	if !errors.Is(c.Err(), ErrConnectionLost) {
		t.Fatalf("Err() = %v, want ErrConnectionLost", c.Err())
	}
	select {
	case <-exited:
		if err := exitErr(); err != nil {
			t.Fatalf("qemu exited with %v", err)
		}
	case <-ctx.Done():
		t.Fatal("qemu did not exit after quit")
	}
}

func TestRealQEMUAcceptsANewClientAfterOneCloses(t *testing.T) {
	sock, _, _ := startQEMU(t)
	ctx := ctxFor(t, 30*time.Second)
	for i := range 2 {
		c, err := Dial(ctx, sock, Options{})
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if err := c.Execute(ctx, "query-status", nil, nil); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		c.Close()
	}
}
