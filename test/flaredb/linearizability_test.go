//go:build linux

package flaredb_test

import (
	"flag"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

var staleReads = flag.Bool("flaredb.stale", false,
	"TestLinearizability: make the workload's reads stale (served by any member without confirming leadership); "+
		"the test then expects porcupine to find a violation, showing the checker can catch one")

// linDuration is how long the clients run under faults.
const linDuration = 40 * time.Second

// TestLinearizability runs concurrent clients doing get, put and
// compare-and-swap on a few keys while a nemesis kills (SIGKILL) and
// restarts members, freezes them (SIGSTOP/SIGCONT) and partitions the
// leader or a follower from the other members, then checks the history
// with porcupine. Any violation fails the test.
func TestLinearizability(t *testing.T) {
	c := startCluster(t)
	w := startWorker(t, c, workerInput{Kind: "lin", Duration: linDuration, Clients: 6, Keys: 6, Stale: *staleReads})

	n := &nemesis{t: t, c: c, w: w, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))}
	calm := 1500 * time.Millisecond
	n.sleep(calm)
	faults := []func(){
		func() { // leader crash
			h := n.leader()
			n.kill(h, "leader")
			n.sleep(2 * time.Second)
			n.restart(h)
		},
		func() { // leader isolated from the other members (clients still reach it)
			h := n.leader()
			n.record("partition leader %s from %s", h.Name(), names(n.others(h)))
			n.check(n.c.Partition(hostsOf(h), n.others(h)))
			n.sleep(3 * time.Second)
			n.logf("heal")
			n.check(n.c.Heal())
		},
		func() { // follower crash
			h := n.follower(n.leader())
			n.kill(h, "follower")
			n.sleep(2 * time.Second)
			n.restart(h)
		},
		func() { // leader frozen
			h := n.leader()
			n.record("SIGSTOP %s (leader)", h.Name())
			n.check(h.Stop())
			n.sleep(2 * time.Second)
			n.logf("SIGCONT %s", h.Name())
			n.check(h.Continue())
		},
		func() { // follower isolated
			h := n.follower(n.leader())
			n.record("partition follower %s from %s", h.Name(), names(n.others(h)))
			n.check(n.c.Partition(hostsOf(h), n.others(h)))
			n.sleep(3 * time.Second)
			n.logf("heal")
			n.check(n.c.Heal())
		},
		func() { // follower frozen
			h := n.follower(n.leader())
			n.record("SIGSTOP %s (follower)", h.Name())
			n.check(h.Stop())
			n.sleep(2 * time.Second)
			n.logf("SIGCONT %s", h.Name())
			n.check(h.Continue())
		},
	}
	stopFaults := linDuration - 6*time.Second
	for i := 0; w.since() < stopFaults && t.Context().Err() == nil; i++ {
		n.checkAlive()
		faults[i%len(faults)]()
		n.sleep(calm)
	}
	n.healAll()
	n.logf("faults over; clients keep running on a healed cluster")

	var out linOutput
	w.wait(linDuration+60*time.Second, &out)
	ops, counts := linOperations(out.Records)
	t.Logf("history: %d operations recorded, %d checked; outcomes %s; %d faults injected: %s",
		len(out.Records), len(ops), fmtCounts(counts), len(n.faults), strings.Join(n.faults, ", "))
	if counts["get/ok"] == 0 || counts["put/ok"] == 0 || counts["cas/ok"] == 0 {
		t.Fatalf("the workload did not exercise every operation: %s", fmtCounts(counts))
	}
	okCAS := 0
	for _, r := range out.Records {
		if r.Op == "cas" && r.Outcome == "ok" && r.OK {
			okCAS++
		}
	}
	t.Logf("%d compare-and-swaps succeeded", okCAS)

	res := checkLinearizable(t, ops, 60*time.Second)
	switch {
	case *staleReads && res == porcupine.Illegal:
		t.Logf("stale reads: porcupine found the expected violation")
	case *staleReads:
		t.Errorf("stale reads: porcupine says %s; expected a violation (run again: it depends on timing)", res)
	case res == porcupine.Illegal:
		t.Errorf("the history is not linearizable (see the visualisation above)")
	case res != porcupine.Ok:
		t.Errorf("porcupine could not decide within its time limit (%s): the history proves nothing", res)
	}
	waitMembersCaughtUp(t, c, 30*time.Second)
}

func fmtCounts(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(k + "=" + strconv.Itoa(m[k]))
	}
	return b.String()
}
