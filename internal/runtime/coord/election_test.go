package coord

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/runtime/coord/coordtest"
)

type campaignResult struct {
	lead Leadership
	err  error
	at   time.Time
}

func campaignAsync(ctx context.Context, el Elector, value string) <-chan campaignResult {
	ch := make(chan campaignResult, 1)
	go func() {
		l, err := el.Campaign(ctx, value)
		ch <- campaignResult{l, err, time.Now()}
	}()
	return ch
}

// TestElectionFailoverOnPartition: the leader's connection to chainfire is
// cut, so its lease can no longer be renewed. Its leadership context is
// cancelled before the lease can expire on the server, i.e. before the
// other candidate can be elected; then the other candidate leads.
func TestElectionFailoverOnPartition(t *testing.T) {
	ep := coordtest.StartMember(t).ClientURL
	p := coordtest.NewProxy(t, ep)
	a, _ := newCoord(t, p.URL()) // a reaches chainfire through the proxy
	b, _ := newCoord(t, ep)
	const ttl = 4 * time.Second // safety margin 800ms

	elA, err := a.Election("scheduler", ttl)
	if err != nil {
		t.Fatal(err)
	}
	elB, _ := b.Election("scheduler", ttl)
	leadA, err := elA.Campaign(ctxT(t, 10*time.Second), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer leadA.Resign(context.Background())
	if info, err := elB.Leader(ctxT(t, 5*time.Second)); err != nil || info.Value != "a" || info.Revision != leadA.Revision() {
		t.Fatalf("Leader = %+v, %v", info, err)
	}

	bCh := campaignAsync(ctxT(t, 30*time.Second), elB, "b")
	select {
	case r := <-bCh:
		t.Fatalf("b became leader while a leads: %+v", r)
	case <-time.After(500 * time.Millisecond):
	}

	cutAt := time.Now()
	p.Cut()
	cause := waitDone(t, leadA.Context(), 10*time.Second, "a's leadership after the cut")
	aLostAt := time.Now()
	if !errors.Is(cause, ErrLeaseLost) {
		t.Fatalf("a's leadership ended with %v, want ErrLeaseLost", cause)
	}
	var rb campaignResult
	select {
	case rb = <-bCh:
	case <-time.After(15 * time.Second):
		t.Fatal("b did not become leader within 15s of a's partition")
	}
	if rb.err != nil {
		t.Fatalf("b's campaign: %v", rb.err)
	}
	defer rb.lead.Resign(context.Background())
	if !aLostAt.Before(rb.at) {
		t.Fatalf("a stopped leading at %s, after b started at %s", aLostAt.Sub(cutAt), rb.at.Sub(cutAt))
	}
	if rb.lead.Revision() <= leadA.Revision() {
		t.Fatalf("fencing token did not increase: a %d, b %d", leadA.Revision(), rb.lead.Revision())
	}
	t.Logf("after the cut: a stopped leading at +%s, b leads at +%s (lease TTL %s)",
		aLostAt.Sub(cutAt).Round(time.Millisecond), rb.at.Sub(cutAt).Round(time.Millisecond), ttl)

	// a's fencing comparison no longer holds; b's does.
	raw := b.Raw()
	resp, err := raw.Txn(ctxT(t, 5*time.Second)).If(leadA.IsLeaderCmp()).Then(clientv3.OpPut("/fenced", "a")).Commit()
	if err != nil || resp.Succeeded {
		t.Fatalf("stale leader's fenced write: succeeded=%v err=%v", resp != nil && resp.Succeeded, err)
	}
	resp, err = raw.Txn(ctxT(t, 5*time.Second)).If(rb.lead.IsLeaderCmp()).Then(clientv3.OpPut("/fenced", "b")).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("leader's fenced write: succeeded=%v err=%v", resp != nil && resp.Succeeded, err)
	}
}

// TestElectionResignAndClientLoss: resigning hands over at once; a leader
// whose client dies loses leadership immediately; deleting the leader key
// ends leadership with ErrKeyLost.
func TestElectionResignAndClientLoss(t *testing.T) {
	ep := coordtest.StartMember(t).ClientURL
	a, rawA := newCoord(t, ep)
	b, _ := newCoord(t, ep)
	admin := coordtest.NewClient(t, ep)
	const ttl = 2 * time.Second
	elA, _ := a.Election("ctl", ttl)
	elB, _ := b.Election("ctl", ttl)

	leadA, err := elA.Campaign(ctxT(t, 10*time.Second), "a")
	if err != nil {
		t.Fatal(err)
	}
	bCh := campaignAsync(ctxT(t, 30*time.Second), elB, "b")
	began := time.Now()
	if err := leadA.Resign(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if cause := context.Cause(leadA.Context()); !errors.Is(cause, ErrReleased) {
		t.Fatalf("after Resign, cause = %v", cause)
	}
	rb := <-bCh
	if rb.err != nil {
		t.Fatal(rb.err)
	}
	if d := rb.at.Sub(began); d > ttl/2 {
		t.Fatalf("handover after resign took %s, want well under the TTL %s", d, ttl)
	}

	// Deleting the leader key from outside ends b's leadership.
	if _, err := admin.Delete(ctxT(t, 5*time.Second), KeyPrefix+"election/ctl/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if cause := waitDone(t, rb.lead.Context(), 5*time.Second, "b's leadership after its key was deleted"); !errors.Is(cause, ErrKeyLost) {
		t.Fatalf("cause = %v, want ErrKeyLost", cause)
	}
	rb.lead.Resign(context.Background())

	// A leader whose client closes stops leading at once.
	leadA, err = elA.Campaign(ctxT(t, 10*time.Second), "a")
	if err != nil {
		t.Fatal(err)
	}
	rawA.Close()
	if cause := waitDone(t, leadA.Context(), 5*time.Second, "a's leadership after its client closed"); !errors.Is(cause, ErrLeaseLost) {
		t.Fatalf("cause = %v, want ErrLeaseLost", cause)
	}
	leadA.Resign(context.Background())

	// A campaign whose context ends returns promptly and leaves no key.
	blocker, err := elB.Campaign(ctxT(t, 10*time.Second), "b")
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Resign(context.Background())
	c2, _ := newCoord(t, ep)
	el2, _ := c2.Election("ctl", ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = el2.Campaign(ctx, "late")
	cancel()
	if err == nil {
		t.Fatal("campaign with an expired context succeeded")
	}
	resp, err := admin.Get(ctxT(t, 5*time.Second), KeyPrefix+"election/ctl/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 1 {
		t.Fatalf("election keys after an abandoned campaign: %d, %v (want only the leader's)", resp.Count, err)
	}

	if _, err := a.Election("a/b", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("election name with '/': %v", err)
	}
}

// TestLeadershipEndsBeforeExpiryWhenAnswersLag: the leader's link delivers
// answers late (3s with a 10s TTL), which must not cost it leadership;
// then its requests stop reaching the server while late answers still
// arrive. The server expires the lease TTL after the last keepalive it
// received, and that keepalive's answer reaches the leader 3s later: a
// leader that measured its trust from when answers arrive would keep
// leading up to the expiry or past it, into the next leader's term.
// Measured from when the keepalive was sent, it stops the safety margin
// before.
func TestLeadershipEndsBeforeExpiryWhenAnswersLag(t *testing.T) {
	ep := coordtest.StartMember(t).ClientURL
	p := coordtest.NewProxy(t, ep)
	a, _ := newCoord(t, p.URL())
	b, _ := newCoord(t, ep)
	const ttl, lag = 10 * time.Second, 3 * time.Second // margin 2s
	elA, _ := a.Election("slow", ttl)
	elB, _ := b.Election("slow", ttl)
	leadA, err := elA.Campaign(ctxT(t, 60*time.Second), "a") // the leadership lives as long
	if err != nil {
		t.Fatal(err)
	}
	defer leadA.Resign(context.Background())
	bCh := campaignAsync(ctxT(t, 60*time.Second), elB, "b")

	p.DelayAnswers(lag)
	select {
	case <-leadA.Context().Done():
		t.Fatalf("a lost leadership while its answers were only late: %v", context.Cause(leadA.Context()))
	case r := <-bCh:
		t.Fatalf("b became leader while a leads: %+v", r)
	case <-time.After(ttl): // several renewals, each answered 3s late
	}

	cutAt := time.Now()
	p.SwallowRequests()
	cause := waitDone(t, leadA.Context(), 2*ttl, "a's leadership after its requests stopped arriving")
	aLost := time.Now()
	if !errors.Is(cause, ErrLeaseLost) {
		t.Fatalf("a's leadership ended with %v, want ErrLeaseLost", cause)
	}
	var rb campaignResult
	select {
	case rb = <-bCh:
	case <-time.After(2 * ttl):
		t.Fatal("b did not become leader")
	}
	if rb.err != nil {
		t.Fatal(rb.err)
	}
	defer rb.lead.Resign(context.Background())
	t.Logf("a stopped leading %s after the cut, b began %s after it", aLost.Sub(cutAt), rb.at.Sub(cutAt))
	// a must stop a good part of the safety margin (2s) before b can
	// lead, so a's users (a controller's running reconciles) have time to
	// stop; trust measured from late answers leaves them nothing.
	if gap := rb.at.Sub(aLost); gap < time.Second {
		t.Fatalf("a stopped leading %s after the cut, only %s before b began", aLost.Sub(cutAt), gap)
	}
}
