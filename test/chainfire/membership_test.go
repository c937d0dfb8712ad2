//go:build linux

package chainfire_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/test/harness"
)

// TestMemberAddRemoveWhileServing: while clients keep writing, a fourth
// host joins the 3-member cluster (`ultracloud chainfire member add`, then
// its node starts with initialState existing) and catches up; then one of
// the original members is removed (`member remove`) and stops. Writes
// continue throughout, and at the end every acknowledged write is on every
// remaining member with its value.
func TestMemberAddRemoveWhileServing(t *testing.T) {
	t.Parallel()
	c := harness.Start(t, harness.Spec{
		Hosts:    4,
		LogLevel: "warn",
		Chainfire: &harness.ChainfireSpec{
			Members: []string{"host1", "host2", "host3"},
			Spares:  []string{"host4"},
		},
	})
	ctx := t.Context()
	orig := c.ChainfireMembers()
	joiner := c.ChainfireSpares()[0]
	cls := memberClients(t, c)
	ldr := leader(t, ctx, cls, 15*time.Second)
	t.Logf("leader: %s", ldr.Name())

	// Writers talk to every member's endpoint, the joiner's included
	// (it does not answer there until it has joined).
	all := append(slices.Clone(orig), joiner)
	var eps []string
	for _, h := range all {
		eps = append(eps, h.ChainfireEndpoint())
	}
	a := &acks{kv: map[string]string{}}
	stop := startWriters(ctx, 6, a, func(int) *clientv3.Client { return newClient(t, c, c.Dial, eps...) })
	defer stop()
	waitAcks(t, ctx, a, 200, 20*time.Second, "200 acknowledged writes before the add")

	// Add host4 while the writers run.
	var out string
	err := harness.WaitFor(ctx, 30*time.Second, "member add to be accepted", func(ctx context.Context) (bool, string) {
		// The cluster refuses reconfiguration until its members have
		// been connected to each other for a few seconds.
		var err error
		out, err = chainfireCLI(t, ctx, c, orig[0], orig, "member", "add", joiner.Name(), joiner.ChainfirePeerURL())
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	var ic []string
	for _, line := range strings.Split(out, "\n") {
		if e, ok := strings.CutPrefix(strings.TrimSpace(line), "- "); ok {
			ic = append(ic, e)
		}
	}
	if len(ic) != 4 || !slices.Contains(ic, joiner.Name()+"="+joiner.ChainfirePeerURL()) {
		t.Fatalf("member add printed initialCluster %v, want the 3 members and %s", ic, joiner.Name())
	}
	if err := joiner.ChainfireJoin(ctx, ic); err != nil {
		t.Fatal(err)
	}
	if err := joiner.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	cls[joiner] = newClient(t, c, joiner.Dial, joiner.ChainfireEndpoint())
	mark := a.count()
	waitAcks(t, ctx, a, mark+200, 30*time.Second, "200 more acknowledged writes after the join")

	// Caught up: at a revision the leader had, the joiner holds the same
	// keys as an original member.
	rev := linearRev(t, ctx, cls[ldr])
	waitCaughtUp(t, ctx, joiner, cls[joiner], rev, 30*time.Second)
	ref, got := keyspace(t, ctx, cls[orig[1]], rev), keyspace(t, ctx, cls[joiner], rev)
	if len(ref) == 0 || len(got) != len(ref) {
		t.Fatalf("at revision %d the joiner has %d keys, %s has %d: %s", rev, len(got), orig[1].Name(), len(ref), diffKeyspaces(ref, got))
	}
	if d := diffKeyspaces(ref, got); d != "" {
		t.Fatalf("joiner differs at revision %d: %s", rev, d)
	}
	t.Logf("%s joined and holds the same %d keys at revision %d", joiner.Name(), len(got), rev)

	// Remove the current leader, the harder case: leadership moves on.
	victim := leader(t, ctx, cls, 15*time.Second)
	err = harness.WaitFor(ctx, 30*time.Second, "member remove to be accepted", func(ctx context.Context) (bool, string) {
		// The cluster refuses while the new member has not been
		// connected for long enough to count towards the quorum.
		_, err := chainfireCLI(t, ctx, c, joiner, []*harness.Host{joiner}, "member", "remove", victim.Name())
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("removed %s", victim.Name())
	delete(cls, victim)
	// The removed member stops serving: its node's chainfire ends.
	err = harness.WaitFor(ctx, 30*time.Second, victim.Name()+" to stop serving as a member", func(ctx context.Context) (bool, string) {
		if !victim.State().Alive() {
			return true, ""
		}
		status, body, err := victim.Get(ctx, "/readyz")
		return err == nil && status != 200, fmt.Sprintf("readyz %d %s %v", status, body, err)
	})
	if err != nil {
		t.Fatal(err)
	}
	next := leader(t, ctx, cls, 15*time.Second)
	mark = a.count()
	waitAcks(t, ctx, a, mark+200, 30*time.Second, "200 more acknowledged writes after the removal")
	stop()
	want, errs, last := a.snapshot()
	t.Logf("%d writes acknowledged, %d failed or unknown (last: %v); leader now %s", len(want), errs, last, next.Name())

	ml, err := cls[next].MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ml.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	wantNames := []string{}
	for _, h := range all {
		if h != victim {
			wantNames = append(wantNames, h.Name())
		}
	}
	if !slices.Equal(names, wantNames) {
		t.Errorf("members after add and remove = %v, want %v", names, wantNames)
	}
	rev = linearRev(t, ctx, cls[next])
	for h, cl := range cls {
		waitCaughtUp(t, ctx, h, cl, rev, 30*time.Second)
		checkKeys(t, ctx, h, cl, "ack/", want)
	}
}
