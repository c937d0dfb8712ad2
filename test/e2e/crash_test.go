package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// ledger records, across kill cycles, every project name a writer sent and
// the metadata of every create the server acknowledged.
type ledger struct {
	mu        sync.Mutex
	attempted map[string]int // name -> cycle
	acked     map[string]api.ObjectMeta
}

func newLedger() *ledger {
	return &ledger{attempted: map[string]int{}, acked: map[string]api.ObjectMeta{}}
}

func (l *ledger) attempt(name string, cycle int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attempted[name] = cycle
}

func (l *ledger) ack(m api.ObjectMeta) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[m.Name] = m
}

// counts returns how many names were sent and acknowledged in cycle.
func (l *ledger) counts(cycle int) (attempted, acked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, c := range l.attempted {
		if c == cycle {
			attempted++
			if _, ok := l.acked[name]; ok {
				acked++
			}
		}
	}
	return attempted, acked
}

// TestCrashSafety kills a node with SIGKILL while 8 SDK writers create
// projects as fast as they can, restarts it on the same data directory, and
// checks that every create that was acknowledged is there unchanged, that
// nothing that was never sent appeared, and that revisions are consistent.
// It does this three times, so later cycles also recover data that went
// through earlier crashes.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	const (
		cycles  = 3
		writers = 8
	)
	h := newHarness(t)
	l := newLedger()
	n := h.start(nodeproc.NodeOptions{LogLevel: "warn"})
	for cycle := 1; cycle <= cycles; cycle++ {
		// Kill at a different point of each cycle: after 1s, 1.5s, 2s.
		writeFor := time.Second + time.Duration(cycle-1)*500*time.Millisecond
		writeUntilKilled(t, n, l, cycle, writers, writeFor)
		attempted, acked := l.counts(cycle)
		t.Logf("cycle %d: killed after %s with %d creates sent, %d acknowledged", cycle, writeFor, attempted, acked)

		n = h.start(nodeproc.NodeOptions{LogLevel: "warn"})
		checkLedger(t, sdk(t, n), l, cycle)
		if t.Failed() {
			return
		}
	}
	if code, err := n.Stop(20 * time.Second); err != nil || code != 0 {
		t.Errorf("final SIGTERM: exit %d, %v", code, err)
	}
}

// writeUntilKilled runs writers that create projects until the node is
// killed, and kills it with SIGKILL once writeFor has passed and some
// creates were acknowledged. Errors before the kill fail the test.
func writeUntilKilled(t *testing.T, n *nodeproc.Node, l *ledger, cycle, writers int, writeFor time.Duration) {
	t.Helper()
	projects := sdk(t, n).Resources("projects", "")
	var killed atomic.Bool
	var acked atomic.Int64
	g, ctx := errgroup.WithContext(t.Context())
	for w := range writers {
		g.Go(func() error {
			for i := 0; ; i++ {
				name := fmt.Sprintf("crash-%d-%d-%d", cycle, w, i)
				l.attempt(name, cycle)
				o, err := projects.Create(ctx, &api.Object{Kind: "Project",
					Metadata: api.ObjectMeta{Name: name, Labels: map[string]string{"cycle": fmt.Sprint(cycle), "writer": fmt.Sprint(w)}},
					Spec:     []byte(fmt.Sprintf(`{"displayName":"writer %d create %d"}`, w, i))})
				// expectedSpec must rebuild exactly this spec from the name.
				if err != nil {
					if killed.Load() {
						return nil // the node is gone; this create's fate is unknown
					}
					return fmt.Errorf("writer %d: create %s before the kill: %w", w, name, err)
				}
				if o.Metadata.Name != name || o.Metadata.Revision <= 0 || o.Metadata.UID == "" {
					return fmt.Errorf("writer %d: create %s acknowledged with bad metadata %+v", w, name, o.Metadata)
				}
				l.ack(o.Metadata)
				acked.Add(1)
			}
		})
	}
	start := time.Now()
	waitErr := nodeproc.WaitFor(ctx, writeFor+20*time.Second, fmt.Sprintf("%s of writing with at least 50 acknowledged creates", writeFor), func() (bool, error) {
		return time.Since(start) >= writeFor && acked.Load() >= 50, nil
	})
	killed.Store(true)
	if err := n.Kill(); err != nil {
		t.Error(err)
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if waitErr != nil {
		t.Fatal(waitErr)
	}
	if n.ExitCode() != -1 {
		t.Fatalf("the node exited with code %d before it was killed; stderr:\n%s", n.ExitCode(), n.Stderr().String())
	}
}

// listPages lists every project page by page and returns the items with
// the revision of the page each was read on. Pages are read at different
// times, so each item is checked against its own page's revision.
func listPages(ctx context.Context, projects *client.Resources, limit int) ([]api.Object, []int64, error) {
	var items []api.Object
	var pageRevs []int64
	o := client.ListOptions{Limit: limit}
	for {
		l, err := projects.List(ctx, o)
		if err != nil {
			return nil, nil, err
		}
		for _, it := range l.Items {
			items = append(items, it)
			pageRevs = append(pageRevs, l.Metadata.Revision)
		}
		if l.Metadata.Continue == "" {
			return items, pageRevs, nil
		}
		o.Continue = l.Metadata.Continue
	}
}

// checkLedger lists every project on a restarted node and checks it
// against the ledger, then waits for the project controller to catch up
// with what the crash interrupted.
func checkLedger(t *testing.T, c *client.Client, l *ledger, cycle int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	projects := c.Resources("projects", "")
	items, pageRevs, err := listPages(ctx, projects, 500)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()

	seen := map[string]api.Object{}
	uids := map[string]string{}
	revs := map[int64]string{}
	var maxRev int64
	unackedPresent := 0
	for i, o := range items {
		m := o.Metadata
		if _, dup := seen[m.Name]; dup {
			t.Errorf("%s is listed twice", m.Name)
		}
		seen[m.Name] = o
		if _, ok := l.attempted[m.Name]; !ok {
			t.Errorf("%s is listed but was never created (garbage)", m.Name)
		}
		if o.Kind != "Project" || m.UID == "" || m.CreatedAt == nil {
			t.Errorf("%s is malformed: kind %q, metadata %+v", m.Name, o.Kind, m)
		}
		if want, ok := expectedSpec(m.Name); ok && string(o.Spec) != want {
			t.Errorf("%s has spec %s, want %s", m.Name, o.Spec, want)
		}
		if m.Revision <= 0 || m.Revision > pageRevs[i] {
			t.Errorf("%s has revision %d, outside (0, its list page's revision %d]", m.Name, m.Revision, pageRevs[i])
		}
		maxRev = max(maxRev, pageRevs[i])
		if other, dup := uids[m.UID]; dup {
			t.Errorf("%s and %s share UID %s", m.Name, other, m.UID)
		}
		uids[m.UID] = m.Name
		if other, dup := revs[m.Revision]; dup {
			t.Errorf("%s and %s share revision %d although every write changes one object", m.Name, other, m.Revision)
		}
		revs[m.Revision] = m.Name
		if _, ok := l.acked[m.Name]; !ok {
			unackedPresent++
		}
	}
	lost := 0
	for name, want := range l.acked {
		got, ok := seen[name]
		if !ok {
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged create of %s (revision %d) is lost", name, want.Revision)
			}
			continue
		}
		// The project controller may have written status since, so the
		// revision may have grown; identity and creation time may not change.
		g := got.Metadata
		if g.UID != want.UID || g.Revision < want.Revision || !g.CreatedAt.Equal(*want.CreatedAt) {
			t.Errorf("%s was acknowledged as uid %s revision %d created %s but reads back as uid %s revision %d created %s",
				name, want.UID, want.Revision, want.CreatedAt, g.UID, g.Revision, g.CreatedAt)
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged creates are lost after crash %d", lost, len(l.acked), cycle)
	}
	t.Logf("after crash %d: %d projects listed in %d-item pages up to revision %d; all %d acknowledged present; %d unacknowledged creates also landed",
		cycle, len(items), 500, maxRev, len(l.acked)-lost, unackedPresent)

	// Spot-check reads by name, and that new writes continue after the
	// highest revision the store recovered.
	checked := 0
	for name, want := range l.acked {
		if checked == 20 {
			break
		}
		checked++
		got, err := projects.Get(ctx, name)
		if err != nil {
			t.Errorf("get %s: %v", name, err)
		} else if got.Metadata.UID != want.UID {
			t.Errorf("get %s: uid %s, want %s", name, got.Metadata.UID, want.UID)
		}
	}
	probe := fmt.Sprintf("probe-after-crash-%d", cycle)
	o, err := projects.Create(ctx, &api.Object{Kind: "Project", Metadata: api.ObjectMeta{Name: probe}})
	if err != nil {
		t.Fatalf("create after crash %d: %v", cycle, err)
	}
	if o.Metadata.Revision <= maxRev {
		t.Errorf("create after crash %d got revision %d, not after the recovered revision %d", cycle, o.Metadata.Revision, maxRev)
	}
	l.attempted[probe] = cycle
	l.acked[probe] = o.Metadata

	// The project controller resumes from its checkpoint and marks every
	// project Active, including those created just before the kill.
	start := time.Now()
	n := waitAllActive(t, c)
	t.Logf("after crash %d: all %d projects Active %s after the checks", cycle, n, time.Since(start).Round(time.Millisecond))
}

// expectedSpec returns the spec a crash writer sent for name, if name is
// one of theirs.
func expectedSpec(name string) (string, bool) {
	var cycle, w, i int
	if n, err := fmt.Sscanf(name, "crash-%d-%d-%d", &cycle, &w, &i); err != nil || n != 3 {
		return "", false
	}
	return fmt.Sprintf(`{"displayName":"writer %d create %d"}`, w, i), true
}
