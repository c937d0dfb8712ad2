package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// snapshot is what a list shows of every project.
type snapshot struct {
	revision int64
	items    map[string]api.Object
}

func takeSnapshot(t *testing.T, c *client.Client) snapshot {
	t.Helper()
	items, rev, err := c.Resources("projects", "").ListAll(t.Context(), client.ListOptions{Limit: 37})
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{revision: rev, items: map[string]api.Object{}}
	for _, o := range items {
		if _, dup := s.items[o.Metadata.Name]; dup {
			t.Errorf("list returned %s twice", o.Metadata.Name)
		}
		s.items[o.Metadata.Name] = o
	}
	return s
}

// sameObject compares everything a restart must preserve.
func sameObject(a, b api.Object) bool {
	return a.Kind == b.Kind && a.Metadata.Name == b.Metadata.Name && a.Metadata.UID == b.Metadata.UID &&
		a.Metadata.Revision == b.Metadata.Revision && a.Metadata.CreatedAt.Equal(*b.Metadata.CreatedAt) &&
		a.Metadata.UpdatedAt.Equal(*b.Metadata.UpdatedAt) && maps.Equal(a.Metadata.Labels, b.Metadata.Labels) &&
		string(a.Spec) == string(b.Spec) && string(a.Status) == string(b.Status)
}

// TestShutdownAndRestart stops a node with SIGTERM while a watch stream is
// open, checks it exits 0 within its grace period, and checks a restart on
// the same data directory serves exactly the same data and history. The
// restarted node is stopped with SIGINT.
func TestShutdownAndRestart(t *testing.T) {
	t.Parallel()
	const grace = 5 * time.Second
	h := newHarness(t)
	n := h.start(nodeproc.NodeOptions{ShutdownGrace: grace})
	c := sdk(t, n)
	ctx := t.Context()
	projects := c.Resources("projects", "")

	h.ok("apply", "-f", h.writeFile("projects.yaml", projectsYAML))
	for i := range 60 {
		o := &api.Object{Kind: "Project", Metadata: api.ObjectMeta{Name: fmt.Sprintf("p-%03d", i), Labels: map[string]string{"batch": fmt.Sprint(i % 3)}},
			Spec: []byte(fmt.Sprintf(`{"displayName":"Project %d"}`, i))}
		if _, err := projects.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := projects.Update(ctx, &api.Object{Kind: "Project", Metadata: api.ObjectMeta{Name: "p-007"}, Spec: []byte(`{"displayName":"seven"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := projects.UpdateStatus(ctx, &api.Object{Kind: "Project", Metadata: api.ObjectMeta{Name: "p-008"}, Status: []byte(`{"phase":"Active"}`)}); err != nil {
		t.Fatal(err)
	}
	deleted, err := projects.Delete(ctx, "p-009", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Let the project controller finish, so nothing writes from here on.
	waitAllActive(t, c)
	before := takeSnapshot(t, c)
	if len(before.items) != 62 {
		t.Fatalf("before the restart there are %d projects, want 62", len(before.items))
	}

	// A second node on the same data directory must refuse to start.
	other, err := binary.StartNode(ctx, nodeproc.NodeOptions{Home: h.home, DataDir: h.dataDir, ReadyTimeout: 10 * time.Second})
	if err == nil {
		_ = other.Kill()
		t.Error("a second node started on a data directory in use")
	} else if !strings.Contains(err.Error(), "is in use by another ultracloud process") {
		t.Errorf("a second node on the same data directory should say the directory is in use, got: %v", err)
	}

	// An open watch must not hold up shutdown.
	wt, err := projects.Watch(ctx, client.WatchOptions{Since: &before.revision})
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Stop()

	start := time.Now()
	code, err := n.Stop(grace + 5*time.Second)
	if err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit %d, %v; stderr:\n%s", code, err, n.Stderr().String())
	}
	if took := time.Since(start); took > grace {
		t.Errorf("shutdown took %s, longer than the %s grace period", took, grace)
	}
	t.Logf("SIGTERM to exit: %s", time.Since(start).Round(time.Millisecond))
	wt.Stop()

	n2 := h.start(nodeproc.NodeOptions{ShutdownGrace: grace})
	if n2.Token != n.Token {
		t.Error("the admin token changed across a restart")
	}
	c2 := sdk(t, n2)
	after := takeSnapshot(t, c2)
	// The store's revision may move on: iam keeps its own records in the
	// same store (the restarted `up` stores a refresh token for the client
	// config it writes). The projects themselves must be untouched.
	if after.revision < before.revision {
		t.Errorf("list revision %d after the restart, %d before", after.revision, before.revision)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(after.items)), slices.Sorted(maps.Keys(before.items))) {
		t.Errorf("names differ after the restart:\nbefore %v\nafter  %v", slices.Sorted(maps.Keys(before.items)), slices.Sorted(maps.Keys(after.items)))
	}
	for name, b := range before.items {
		if a, ok := after.items[name]; ok && !sameObject(a, b) {
			t.Errorf("%s changed across the restart:\nbefore %+v %s %s\nafter  %+v %s %s", name, b.Metadata, b.Spec, b.Status, a.Metadata, a.Spec, a.Status)
		}
	}
	// The CLI follows the rewritten client config to the new port.
	if out := h.ok("get", "project", "p-007", "-o", "json"); !strings.Contains(out, `"seven"`) {
		t.Errorf("get p-007 after the restart:\n%s", out)
	}
	// History survived: the delete of p-009 is replayed from before it.
	del := deleted.Metadata.Revision
	since := del - 1
	wt2, err := c2.Resources("projects", "").Watch(ctx, client.WatchOptions{Since: &since})
	if err != nil {
		t.Fatal(err)
	}
	defer wt2.Stop()
	// New writes continue the revision sequence.
	created, err := c2.Resources("projects", "").Create(ctx, &api.Object{Kind: "Project", Metadata: api.ObjectMeta{Name: "after-restart"}})
	if err != nil {
		t.Fatal(err)
	}
	if created.Metadata.Revision <= before.revision {
		t.Errorf("first write after the restart got revision %d, not after %d", created.Metadata.Revision, before.revision)
	}
	// Expect the delete, then only the controller's status writes from
	// before the shutdown, then the new project.
	var got []string
	for {
		ev, err := nextEvent(ctx, wt2, 10*time.Second)
		if err != nil {
			t.Fatalf("watch from revision %d after the restart: %v; so far %q", since, err, got)
		}
		e := fmt.Sprintf("%s %s %d", ev.Type, ev.Object.Metadata.Name, ev.Revision)
		if len(got) == 0 && e != fmt.Sprintf("DELETED p-009 %d", del) {
			t.Errorf("watch from revision %d after the restart starts with %q, want the delete of p-009 at %d", since, e, del)
		}
		got = append(got, e)
		if ev.Object.Metadata.Name == "after-restart" {
			if e != fmt.Sprintf("ADDED after-restart %d", created.Metadata.Revision) {
				t.Errorf("watch shows %q for the new project created at revision %d", e, created.Metadata.Revision)
			}
			break
		}
		if len(got) > 1 && (ev.Type != api.EventModified || ev.Revision > before.revision) {
			t.Errorf("unexpected event %q between the delete at %d and the restart", e, del)
		}
	}

	if err := n2.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code, err := n2.Wait(grace + 5*time.Second); err != nil || code != 0 {
		t.Errorf("after SIGINT: exit %d, %v; stderr:\n%s", code, err, n2.Stderr().String())
	}
}

// nextEvent returns the next non-bookmark event, waiting at most timeout.
func nextEvent(ctx context.Context, w *client.Watch, timeout time.Duration) (api.Event, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return api.Event{}, fmt.Errorf("watch ended: %v", w.Err())
			}
			if ev.Type != api.EventBookmark {
				return ev, nil
			}
		case <-timer.C:
			return api.Event{}, fmt.Errorf("no watch event within %s", timeout)
		case <-ctx.Done():
			return api.Event{}, ctx.Err()
		}
	}
}

// TestInvalidConfig checks that bad configuration stops the process before
// it does anything, with a message naming the field.
func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dataDir := filepath.Join(h.home.Root, "never-created")

	badKey := h.writeFile("bad-key.yaml", "node: n1\ndataDir: "+dataDir+"\napi:\n  listen: 127.0.0.1:0\n  listn: 127.0.0.1:7700\n")
	if res := h.fails("server", "--config", badKey); !strings.Contains(res.Stderr, "listn") {
		t.Errorf("server with an unknown key should name it:\n%s", res)
	}
	badTop := h.writeFile("bad-top.yaml", "node: n1\ndatadir: "+dataDir+"\n")
	if res := h.fails("server", "--config", badTop); !strings.Contains(res.Stderr, "datadir") {
		t.Errorf("server with a misspelt top-level key should name it:\n%s", res)
	}
	badLevel := h.writeFile("bad-level.yaml", "node: n1\ndataDir: "+dataDir+"\nlog:\n  level: loud\n")
	if res := h.fails("server", "--config", badLevel); !strings.Contains(res.Stderr, "log.level") {
		t.Errorf("server with a bad log level should name log.level:\n%s", res)
	}
	if res := h.fails("server"); !strings.Contains(res.Stderr, "--config") {
		t.Errorf("server without --config should ask for it:\n%s", res)
	}
	if res := h.fails("server", "--config", filepath.Join(h.home.Root, "missing.yaml")); !strings.Contains(res.Stderr, "missing.yaml") {
		t.Errorf("server with a missing config file should name it:\n%s", res)
	}
	for _, listen := range []string{"nonsense", "127.0.0.1:99999", "example.com:80"} {
		if res := h.fails("up", "--data-dir", dataDir, "--listen", listen); !strings.Contains(res.Stderr, "api.listen") {
			t.Errorf("up --listen %s should name api.listen:\n%s", listen, res)
		}
	}
	if res := h.fails("up", "--data-dir", dataDir, "--shutdown-grace", "forever"); !strings.Contains(res.Stderr, "shutdown-grace") {
		t.Errorf("up --shutdown-grace forever should name the flag:\n%s", res)
	}
	env := h.on(t)
	env.home.Extra = []string{"ULTRACLOUD_LOG_LEVEL=chatty"}
	if res := env.fails("up", "--data-dir", dataDir); !strings.Contains(res.Stderr, "ULTRACLOUD_LOG_LEVEL") && !strings.Contains(res.Stderr, "log.level") {
		t.Errorf("a bad ULTRACLOUD_LOG_LEVEL should be named:\n%s", res)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an invalid config left something at %s (%v)", dataDir, err)
	}
}

// TestPortInUse checks that a node whose listen address is taken exits
// non-zero by itself, naming the address.
func TestPortInUse(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ln := testkit.Listen(t)
	p, err := binary.Start(h.home, "up", "--data-dir", h.dataDir, "--listen", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	code, err := p.Wait(10 * time.Second)
	if err != nil {
		// Known bug: node.Run waits for the listener's address on a context
		// that a failed start never cancels, so the process hangs until a
		// signal. SIGTERM makes it print the reason.
		_, _ = p.Stop(10 * time.Second)
		t.Fatalf("`up` on a taken port did not exit by itself: %v; after SIGTERM it printed:\n%s", err, p.Stderr().String())
	}
	if code == 0 || !strings.Contains(p.Stderr().String(), "address already in use") || !strings.Contains(p.Stderr().String(), ln.Addr().String()) {
		t.Errorf("`up` on a taken port: exit %d; stderr:\n%s", code, p.Stderr().String())
	}
}

// TestStartRetriesTakenPort checks the harness itself: when the port it
// picked is taken before the node binds it, StartNode notices the failed
// start promptly and starts the node on another port.
func TestStartRetriesTakenPort(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ln := testkit.Listen(t)
	taken := ln.Addr().(*net.TCPAddr).Port
	picks := 0
	start := time.Now()
	n, err := binary.StartNode(t.Context(), nodeproc.NodeOptions{Home: h.home, DataDir: h.dataDir, PickPort: func() (int, error) {
		picks++
		if picks == 1 {
			return taken, nil
		}
		return nodeproc.FreePort()
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Kill() })
	if picks != 2 || strings.HasSuffix(n.Addr(), fmt.Sprintf(":%d", taken)) {
		t.Errorf("picked %d ports and runs on %s; want a second port other than %d", picks, n.Addr(), taken)
	}
	t.Logf("started on the second port after %s", time.Since(start).Round(time.Millisecond))
	if code, err := n.Stop(10 * time.Second); err != nil || code != 0 {
		t.Errorf("SIGTERM: exit %d, %v", code, err)
	}
}
