//go:build linux

package chainfire_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/test/harness"
)

// Candidates' settings: the leadership lease TTL, the work before each
// fenced write, and how much later than the TTL a new leader may take
// (lease expiry is checked every 500ms by the chainfire leader, then the
// revoke is committed and the next candidate's watch fires).
const (
	candidateTTL   = 3 * time.Second
	candidateWork  = 800 * time.Millisecond
	electionSlack  = 3 * time.Second
	electionName   = "fencing-test"
	fencedPrefix   = "fenced"
	leadTakeoverBy = candidateTTL + electionSlack
)

// event is one line a candidate printed, with when the test read it.
type event struct {
	kind string
	f    map[string]string
	at   time.Time
}

func (e event) rev() int64 { n, _ := strconv.ParseInt(e.f["rev"], 10, 64); return n }

// events is the merged log of every candidate's lines.
type events struct {
	mu  sync.Mutex
	all []event
}

func (l *events) add(e event) {
	l.mu.Lock()
	l.all = append(l.all, e)
	l.mu.Unlock()
}

func (l *events) list() []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]event(nil), l.all...)
}

// wait returns the first event from index from on that matches, waiting
// up to timeout.
func (l *events) wait(t *testing.T, ctx context.Context, from int, timeout time.Duration, what string, match func(event) bool) (event, int) {
	t.Helper()
	var found event
	idx := -1
	err := harness.WaitFor(ctx, timeout, what, func(context.Context) (bool, string) {
		evs := l.list()
		for i := from; i < len(evs); i++ {
			if match(evs[i]) {
				found, idx = evs[i], i
				return true, ""
			}
		}
		if len(evs) > 0 {
			last := evs[len(evs)-1]
			return false, fmt.Sprintf("%d events, last %s %v", len(evs), last.kind, last.f)
		}
		return false, "no events"
	})
	if err != nil {
		t.Fatal(err)
	}
	return found, idx
}

// parseEvent parses `KIND k=v k="quoted v" ...`.
func parseEvent(line string) (event, bool) {
	kind, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	if kind == "" {
		return event{}, false
	}
	e := event{kind: kind, f: map[string]string{}}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		k, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				break
			}
			e.f[k], _ = strconv.Unquote(q)
			rest = after[len(q):]
			continue
		}
		v, next, _ := strings.Cut(after, " ")
		e.f[k], rest = v, next
	}
	return e, true
}

// candidateProc is one candidate process running in a host's namespace.
type candidateProc struct {
	name   string
	host   *harness.Host
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{} // closed when the process has been reaped
}

func (p *candidateProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %s: %v", p.name, sig, err)
	}
}

// waitState waits until the process's /proc state letter is in states.
func (p *candidateProc) waitState(t *testing.T, states string) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
	err := harness.WaitFor(t.Context(), 5*time.Second, p.name+" to be in state "+states, func(context.Context) (bool, string) {
		b, err := os.ReadFile(path)
		if err != nil {
			return false, err.Error()
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		return len(f) > 0 && strings.Contains(states, f[0]), "state " + f[0]
	})
	if err != nil {
		t.Fatal(err)
	}
}

// buildCandidate builds test/chainfire/candidate into a temporary
// directory.
func buildCandidate(t *testing.T) string {
	t.Helper()
	root, err := harness.ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "candidate")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./test/chainfire/candidate")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the candidate: %v\n%s", err, out)
	}
	return bin
}

// startCandidate runs a candidate in h's namespace; its lines go to log.
// Cleanup kills it.
func startCandidate(t *testing.T, c *harness.Cluster, bin string, h *harness.Host, log *events) *candidateProc {
	t.Helper()
	var eps []string
	for _, m := range c.ChainfireMembers() {
		eps = append(eps, m.ChainfireEndpoint())
	}
	p := &candidateProc{name: "cand-" + h.Name(), host: h, done: make(chan struct{})}
	// `ip netns exec` execs the candidate in place: the PID is its own.
	p.cmd = h.Command(context.Background(), bin, "-endpoints", strings.Join(eps, ","), "-cacert", c.ChainfireCAFile(),
		"-name", p.name, "-election", electionName, "-ttl", candidateTTL.String(), "-work", candidateWork.String(), "-prefix", fencedPrefix)
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if e, ok := parseEvent(sc.Text()); ok {
				e.at = time.Now()
				log.add(e)
			}
		}
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

// TestLeaderElectionWithFencing: three candidate processes, one per host
// namespace, campaign in one election and write fenced on their
// leadership while they lead. SIGKILL of the leader's process: another
// candidate leads within the lease TTL plus slack. A leader frozen
// (SIGSTOP) during its work until its lease has expired and another leads,
// then resumed: its pending write is refused by the fence, it notices it
// lost leadership, and the store holds no write of it after its lease
// ended. Every fenced write in the store was made while its writer was
// the leader (checked at the write's own revision).
func TestLeaderElectionWithFencing(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	ctx := t.Context()
	bin := buildCandidate(t)
	log := &events{}
	procs := map[string]*candidateProc{}
	for _, h := range c.ChainfireMembers() {
		p := startCandidate(t, c, bin, h, log)
		procs[p.name] = p
	}
	isKind := func(kind string) func(event) bool { return func(e event) bool { return e.kind == kind } }

	// First leader, writing.
	lead1, i := log.wait(t, ctx, 0, 30*time.Second, "a first leader", isKind("LEAD"))
	first := procs[lead1.f["name"]]
	for range 3 {
		_, i = log.wait(t, ctx, i+1, 10*time.Second, first.name+" to write", func(e event) bool {
			return e.kind == "WROTE" && e.f["name"] == first.name
		})
	}

	// SIGKILL the leader: another leads within TTL + slack.
	first.signal(t, syscall.SIGKILL)
	killedAt := time.Now()
	<-first.done
	lead2, i := log.wait(t, ctx, i+1, leadTakeoverBy+5*time.Second, "a new leader after the SIGKILL", func(e event) bool {
		return e.kind == "LEAD" && e.f["name"] != first.name
	})
	took := lead2.at.Sub(killedAt)
	t.Logf("%s (rev %s) SIGKILLed; %s leads (rev %s) %s later", first.name, lead1.f["rev"], lead2.f["name"], lead2.f["rev"], took.Round(time.Millisecond))
	if took > leadTakeoverBy {
		t.Errorf("new leader after %s, want within the lease TTL %s + %s", took, candidateTTL, electionSlack)
	}
	if lead2.rev() <= lead1.rev() {
		t.Errorf("fencing revision went from %d to %d, want it to increase", lead1.rev(), lead2.rev())
	}
	second := procs[lead2.f["name"]]
	_, i = log.wait(t, ctx, i+1, 10*time.Second, second.name+" to write", func(e event) bool {
		return e.kind == "WROTE" && e.f["name"] == second.name
	})

	// Freeze the leader in the middle of its work, before its next write.
	work, i := log.wait(t, ctx, i+1, 10*time.Second, second.name+" to start work", func(e event) bool {
		return e.kind == "WORK" && e.f["name"] == second.name
	})
	second.signal(t, syscall.SIGSTOP)
	stoppedAt := time.Now()
	second.waitState(t, "Tt")
	lead3, i := log.wait(t, ctx, i+1, leadTakeoverBy+5*time.Second, "a new leader while the old one is frozen", func(e event) bool {
		return e.kind == "LEAD" && e.f["name"] != second.name
	})
	took = lead3.at.Sub(stoppedAt)
	t.Logf("%s frozen during its work (seq %s); %s leads (rev %s) %s later", second.name, work.f["seq"], lead3.f["name"], lead3.f["rev"], took.Round(time.Millisecond))
	if took > leadTakeoverBy {
		t.Errorf("new leader after %s, want within the lease TTL %s + %s", took, candidateTTL, electionSlack)
	}
	// The frozen leader renewed its lease at most about TTL/3 (plus the
	// client's 500ms keepalive tick) before it froze, so its lease had at
	// least that long to run: a leader much sooner means no expiry.
	if took < candidateTTL/3 {
		t.Errorf("new leader %s after the old one froze: sooner than its lease (%s) could have expired", took, candidateTTL)
	}
	third := procs[lead3.f["name"]]
	for range 2 {
		_, i = log.wait(t, ctx, i+1, 10*time.Second, third.name+" to write", func(e event) bool {
			return e.kind == "WROTE" && e.f["name"] == third.name
		})
	}

	// Resume the stale leader: it finishes its work and sends its write,
	// which the fence refuses; it notices it lost leadership.
	second.signal(t, syscall.SIGCONT)
	resumedAt := time.Now()
	resumeIdx := len(log.list())
	fenced, _ := log.wait(t, ctx, resumeIdx, 10*time.Second, second.name+"'s pending write to be refused", func(e event) bool {
		return e.f["name"] == second.name && (e.kind == "FENCED" || e.kind == "WROTE" || e.kind == "WRITEERR")
	})
	if fenced.kind != "FENCED" || fenced.f["seq"] != work.f["seq"] || fenced.f["rev"] != lead2.f["rev"] {
		t.Errorf("after resuming, the stale leader's pending write (rev %s seq %s) ended %s %v, want FENCED", lead2.f["rev"], work.f["seq"], fenced.kind, fenced.f)
	}
	lost, _ := log.wait(t, ctx, resumeIdx, 10*time.Second, second.name+" to notice it lost leadership", func(e event) bool {
		return e.kind == "LOST" && e.f["name"] == second.name
	})
	t.Logf("resumed %s: %s seq %s, then LOST (%s) %s after the resume", second.name, fenced.kind, fenced.f["seq"], lost.f["cause"], lost.at.Sub(resumedAt).Round(time.Millisecond))
	// It campaigns again and waits behind the current leader.
	_, _ = log.wait(t, ctx, resumeIdx, 10*time.Second, second.name+" to campaign again", func(e event) bool {
		return e.kind == "CAMPAIGN" && e.f["name"] == second.name
	})
	mark := len(log.list())
	_, _ = log.wait(t, ctx, mark, 10*time.Second, third.name+" to keep writing", func(e event) bool {
		return e.kind == "WROTE" && e.f["name"] == third.name
	})

	// Stop everyone, then audit.
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	evs := log.list()
	auditFencedWrites(t, ctx, c, evs)
	for _, e := range evs {
		if e.f["name"] == second.name && e.kind == "WROTE" && e.at.After(resumedAt) {
			t.Errorf("the stale leader %s wrote after it was resumed: %v", second.name, e.f)
		}
		if e.f["name"] == second.name && e.kind == "LEAD" && e.at.After(resumedAt) && e.at.Before(lost.at) {
			t.Errorf("the stale leader %s claimed leadership again before noticing the loss: %v", second.name, e.f)
		}
	}
}

// auditFencedWrites checks the store against the candidates' logs: every
// acknowledged (WROTE) write is in the store at the revision reported,
// and every fenced write in the store was made while its writer led: at
// the write's revision, the oldest candidate key of the election (the
// leader) is the writer's, created at the writer's fencing revision.
func auditFencedWrites(t *testing.T, ctx context.Context, c *harness.Cluster, evs []event) {
	t.Helper()
	cl := allClient(t, c)
	resp, err := cl.Get(ctx, fencedPrefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]int64{}
	for _, kv := range resp.Kvs {
		stored[string(kv.Key)] = kv.ModRevision
	}
	acked := 0
	for _, e := range evs {
		if e.kind != "WROTE" {
			continue
		}
		acked++
		seq, _ := strconv.Atoi(e.f["seq"])
		key := fmt.Sprintf("%s/%020d/%s/%06d", fencedPrefix, e.rev(), e.f["name"], seq)
		mod, ok := stored[key]
		if !ok {
			t.Errorf("acknowledged fenced write %s is not in the store", key)
		} else if strconv.FormatInt(mod, 10) != e.f["modrev"] {
			t.Errorf("fenced write %s is at revision %d, acknowledged at %s", key, mod, e.f["modrev"])
		}
	}
	if acked < 6 {
		t.Errorf("only %d fenced writes acknowledged; the test expects several per leader", acked)
	}
	prefix := coord.KeyPrefix + "election/" + electionName + "/"
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), fencedPrefix+"/"), "/")
		if len(parts) != 3 {
			t.Errorf("unexpected key %s", kv.Key)
			continue
		}
		rev, _ := strconv.ParseInt(parts[0], 10, 64)
		name := parts[1]
		lr, err := cl.Get(ctx, prefix, append(clientv3.WithFirstCreate(), clientv3.WithRev(kv.ModRevision))...)
		if err != nil {
			t.Fatalf("reading the leader at revision %d: %v", kv.ModRevision, err)
		}
		if len(lr.Kvs) == 0 {
			t.Errorf("write %s at revision %d: the election had no leader then", kv.Key, kv.ModRevision)
			continue
		}
		if l := lr.Kvs[0]; l.CreateRevision != rev || string(l.Value) != name {
			t.Errorf("write %s at revision %d by %s (fencing revision %d), but the leader then was %s (revision %d)",
				kv.Key, kv.ModRevision, name, rev, l.Value, l.CreateRevision)
		}
	}
	t.Logf("audited %d fenced writes in the store, %d acknowledged", len(resp.Kvs), acked)
}

func TestParseEvent(t *testing.T) {
	e, ok := parseEvent(`LOST name=cand-host1 rev=12 cause="fenced write refused"`)
	if !ok || e.kind != "LOST" || e.f["name"] != "cand-host1" || e.rev() != 12 || e.f["cause"] != "fenced write refused" {
		t.Fatalf("parseEvent = %+v, %v", e, ok)
	}
}
