//go:build linux

package flaredb_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"
)

// crashDuration is how long the writers run.
const crashDuration = 20 * time.Second

// TestCrashRecovery SIGKILLs the leader, and in a second round a follower,
// while 16 writers put as fast as they can, restarts each, and then checks
// that the cluster (and every member's own copy) holds every acknowledged
// write: each key has its last acknowledged value or the value of a write
// whose outcome the client could not know, and nothing else.
func TestCrashRecovery(t *testing.T) {
	c := startCluster(t)
	w := startWorker(t, c, workerInput{Kind: "crash", Duration: crashDuration, Clients: 16})
	n := &nemesis{t: t, c: c, w: w, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}

	n.sleep(2 * time.Second)
	leader := n.leader()
	n.kill(leader, "leader")
	n.sleep(2 * time.Second)
	n.restart(leader)
	waitMembersCaughtUp(t, c, 30*time.Second)
	n.logf("%s caught up", leader.Name())

	n.sleep(2 * time.Second)
	follower := n.follower(n.leader())
	n.kill(follower, "follower")
	n.sleep(2 * time.Second)
	n.restart(follower)
	waitMembersCaughtUp(t, c, 30*time.Second)
	n.logf("%s caught up", follower.Name())
	if w.since() > crashDuration-time.Second {
		t.Logf("warning: the faults ran until %s, close to the end of the writes (%s)", w.since(), crashDuration)
	}

	var out crashOutput
	w.wait(crashDuration+90*time.Second, &out)
	counts := map[string]int{}
	for _, ws := range out.Writes {
		for _, cw := range ws {
			counts[cw.Outcome]++
		}
	}
	t.Logf("writes: %s; final state: %d keys at revision %d; %d faults: %v", fmtCounts(counts), len(out.Final), out.FinalRev, len(n.faults), n.faults)
	if counts["ok"] < 1000 {
		t.Errorf("only %d writes acknowledged: not the heavy write load the test needs", counts["ok"])
	}
	if counts["ok"] == 0 {
		t.FailNow()
	}

	exact, uncertain := checkCrashState(t, "cluster", out.Writes, out.Final)
	t.Logf("cluster state: %d keys hold their last acknowledged value, %d a value of a write of unknown outcome", exact, uncertain)
	for _, ep := range c.FlareDBEndpoints() {
		state, ok := out.Members[ep]
		if !ok {
			t.Errorf("member %s: no state: %s", ep, out.MemberErr[ep])
			continue
		}
		checkCrashState(t, "member "+ep, out.Writes, state)
		if len(state) != len(out.Final) {
			t.Errorf("member %s holds %d keys at revision %d, the cluster %d", ep, len(state), out.FinalRev, len(out.Final))
		}
		for k, v := range out.Final {
			if state[k] != v {
				t.Errorf("member %s: %s = %q at revision %d, the cluster read %q", ep, k, state[k], out.FinalRev, v)
				break
			}
		}
	}
}

// checkCrashState checks state against the writes (per writer, in issue
// order; each writer owns its keys, so its order is the key's order). It
// returns how many keys hold their last acknowledged value and how many
// the value of a write of unknown outcome.
func checkCrashState(t *testing.T, who string, writes [][]crashWrite, state map[string]string) (exact, uncertain int) {
	t.Helper()
	type keyInfo struct {
		lastAcked string // "" if none
		ackedRev  int64
		// possible are values of writes of unknown outcome: they may have
		// been applied at any time after they were sent, even after a
		// later acknowledged write (a request can linger in a queue).
		possible []string
		failed   []string
	}
	keys := map[string]*keyInfo{}
	for _, ws := range writes {
		for _, cw := range ws {
			ki := keys[cw.Key]
			if ki == nil {
				ki = &keyInfo{}
				keys[cw.Key] = ki
			}
			switch cw.Outcome {
			case "ok":
				if cw.Rev <= ki.ackedRev {
					t.Errorf("%s: %s: acknowledged write %s got revision %d, not after the previous acknowledged one (%d)", who, cw.Key, cw.Value, cw.Rev, ki.ackedRev)
				}
				ki.lastAcked, ki.ackedRev = cw.Value, cw.Rev
			case "unknown":
				ki.possible = append(ki.possible, cw.Value)
			default:
				ki.failed = append(ki.failed, cw.Value)
			}
		}
	}
	var errs []string
	for k, ki := range keys {
		got, ok := state[k]
		switch {
		case ok && got == ki.lastAcked:
			exact++
		case ok && slices.Contains(ki.possible, got):
			uncertain++
		case !ok && ki.lastAcked == "":
			// Only writes of unknown outcome or refused ones: none applied.
		case !ok:
			errs = append(errs, fmt.Sprintf("%s: missing, but %s was acknowledged at revision %d", k, ki.lastAcked, ki.ackedRev))
		case slices.Contains(ki.failed, got):
			errs = append(errs, fmt.Sprintf("%s = %s, a write the cluster refused (acknowledged: %q)", k, got, ki.lastAcked))
		default:
			errs = append(errs, fmt.Sprintf("%s = %s, not the acknowledged %q nor a write in flight", k, got, ki.lastAcked))
		}
	}
	for k, v := range state {
		if keys[k] == nil {
			errs = append(errs, fmt.Sprintf("%s = %s was never written", k, v))
		}
	}
	sort.Strings(errs)
	for i, e := range errs {
		if i == 20 {
			t.Errorf("%s: ... and %d more", who, len(errs)-20)
			break
		}
		t.Errorf("%s: %s", who, e)
	}
	return exact, uncertain
}
