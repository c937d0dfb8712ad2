//go:build linux

package flaredb_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// watchDuration is how long the writers run.
const watchDuration = 14 * time.Second

// TestWatchAcrossLeaderChange watches a prefix while four writers each
// write increasing values to a key of their own, kills the leader (which
// serves the watch), restarts it, then stops the next leader gracefully
// (it hands leadership over) and starts it again. The watch must deliver
// every acknowledged write exactly once, in revision order, with nothing
// that was not written, and the same events as a watch replayed from the
// same revision afterwards.
func TestWatchAcrossLeaderChange(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	leader, err := c.WaitFlareDBLeader(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The watcher's first endpoint is the leader: its stream breaks when
	// the leader dies.
	eps := []string{leader.FlareDBAPIAddr()}
	for _, ep := range c.FlareDBEndpoints() {
		if ep != eps[0] {
			eps = append(eps, ep)
		}
	}
	w := startWorker(t, c, workerInput{Kind: "watch", Duration: watchDuration, Clients: 4, Endpoints: eps})
	n := &nemesis{t: t, c: c, w: w, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))}

	n.sleep(2 * time.Second)
	n.kill(leader, "leader, serving the watch")
	n.sleep(2 * time.Second)
	n.restart(leader)
	waitMembersCaughtUp(t, c, 30*time.Second)

	n.sleep(time.Second)
	next := n.leader()
	n.terminate(next, "leader: a graceful stop hands leadership over")
	n.sleep(time.Second)
	n.restart(next)
	waitMembersCaughtUp(t, c, 30*time.Second)
	if w.since() > watchDuration-time.Second {
		t.Logf("warning: the faults ran until %s, close to the end of the writes (%s)", w.since(), watchDuration)
	}

	var out watchOutput
	w.wait(watchDuration+90*time.Second, &out)
	counts := map[string]int{}
	for _, ws := range out.Writes {
		for _, cw := range ws {
			counts[cw.Outcome]++
		}
	}
	t.Logf("writes: %s; revisions %d..%d; live watch: %d events, %d reconnects, complete=%v, err=%q; replay: %d events; faults: %v",
		fmtCounts(counts), out.StartRev+1, out.EndRev, len(out.Live), out.Resumes, out.Complete, out.LiveErr, len(out.Replay), n.faults)
	if !out.Complete {
		t.Errorf("the live watch did not deliver the end marker (revision %d) within 30s", out.EndRev)
	}
	if out.LiveErr != "" {
		t.Errorf("the live watch ended with an error: %s", out.LiveErr)
	}
	if out.Resumes == 0 {
		t.Errorf("the live watch never had to reconnect: the leader kill did not hit it, so the test proved nothing")
	}
	if counts["ok"] < 100 {
		t.Errorf("only %d writes acknowledged", counts["ok"])
	}
	checkWatchEvents(t, "live watch", out.Writes, out.Live, out.EndRev)
	checkWatchEvents(t, "replayed watch", out.Writes, out.Replay, out.EndRev)
	if !slices.Equal(out.Live, out.Replay) {
		for i := range min(len(out.Live), len(out.Replay)) {
			if out.Live[i] != out.Replay[i] {
				t.Errorf("live and replayed watch differ first at event %d: %+v vs %+v", i, out.Live[i], out.Replay[i])
				break
			}
		}
		t.Errorf("live watch delivered %d events, a replay from the same revision %d", len(out.Live), len(out.Replay))
	}
}

// checkWatchEvents checks that events (ending with the end marker at
// endRev) hold every acknowledged write once with its revision, in
// revision order, and otherwise only writes whose outcome was unknown.
func checkWatchEvents(t *testing.T, who string, writes [][]crashWrite, events []watchEvent, endRev int64) {
	t.Helper()
	type kv struct{ key, value string }
	acked := map[kv]int64{}
	unknown := map[kv]bool{}
	for _, ws := range writes {
		var prev int64
		for _, w := range ws {
			switch w.Outcome {
			case "ok":
				acked[kv{w.Key, w.Value}] = w.Rev
				if w.Rev <= prev {
					t.Errorf("%s: write %s=%s acknowledged at revision %d, not after the writer's previous one (%d)", who, w.Key, w.Value, w.Rev, prev)
				}
				prev = w.Rev
			case "unknown":
				unknown[kv{w.Key, w.Value}] = true
			}
		}
	}
	var errs []string
	seen := map[kv]bool{}
	lastValue := map[string]string{}
	var prevRev int64
	for i, ev := range events {
		if ev.Rev < prevRev {
			errs = append(errs, fmt.Sprintf("event %d (%s=%s) has revision %d after revision %d", i, ev.Key, ev.Value, ev.Rev, prevRev))
		}
		prevRev = ev.Rev
		if ev.Key == watchEndKey {
			if ev.Rev != endRev || i != len(events)-1 {
				errs = append(errs, fmt.Sprintf("end marker at revision %d (want %d) as event %d of %d", ev.Rev, endRev, i, len(events)))
			}
			continue
		}
		if ev.Type != "put" {
			errs = append(errs, fmt.Sprintf("event %d: unexpected %s of %s", i, ev.Type, ev.Key))
			continue
		}
		k := kv{ev.Key, ev.Value}
		if seen[k] {
			errs = append(errs, fmt.Sprintf("event %d: %s=%s delivered twice", i, ev.Key, ev.Value))
		}
		seen[k] = true
		// Values of one key are written in increasing order.
		if ev.Value <= lastValue[ev.Key] {
			errs = append(errs, fmt.Sprintf("event %d: %s=%s after %s", i, ev.Key, ev.Value, lastValue[ev.Key]))
		}
		lastValue[ev.Key] = ev.Value
		rev, ok := acked[k]
		switch {
		case ok && rev != ev.Rev:
			errs = append(errs, fmt.Sprintf("event %d: %s=%s at revision %d, acknowledged at %d", i, ev.Key, ev.Value, ev.Rev, rev))
		case !ok && !unknown[k]:
			errs = append(errs, fmt.Sprintf("event %d: %s=%s at revision %d was never written (or was refused)", i, ev.Key, ev.Value, ev.Rev))
		}
	}
	missing := 0
	for k, rev := range acked {
		if !seen[k] {
			if missing < 10 {
				errs = append(errs, fmt.Sprintf("acknowledged write %s=%s at revision %d never delivered", k.key, k.value, rev))
			}
			missing++
		}
	}
	if missing > 0 {
		errs = append(errs, fmt.Sprintf("%d acknowledged writes missing in all", missing))
	}
	slices.Sort(errs)
	for i, e := range errs {
		if i == 20 {
			t.Errorf("%s: ... and %d more", who, len(errs)-20)
			break
		}
		t.Errorf("%s: %s", who, e)
	}
}
