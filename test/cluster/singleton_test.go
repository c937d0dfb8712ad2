//go:build linux

package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/harness"
)

// singletonController is the controller the test follows.
const singletonController = "iam-projects"

// controllerLeader returns the "leader" detail of the iam-projects
// component in h's /v1/status: "true", "false", or "" when the node does
// not report one (the controller is not a singleton there).
func controllerLeader(ctx context.Context, c *client.Client) (string, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return "", err
	}
	for _, cs := range st.Components {
		if cs.Name == singletonController {
			return cs.Details["leader"], nil
		}
	}
	return "", fmt.Errorf("no %s component in the status of %s", singletonController, c.Endpoint())
}

// reconciles sums ultracloud_controller_reconciles_total of iam-projects
// on h's /metrics (0 when the series is absent: nothing reconciled yet).
func reconciles(ctx context.Context, h *harness.Host) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := h.HTTPClient().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	prefix := `ultracloud_controller_reconciles_total{controller="` + singletonController + `"`
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// clearPhase empties project name's status (retrying while the store
// elects a leader); the singleton must put "Active" back.
func clearPhase(ctx context.Context, t *testing.T, c *client.Client, name string) {
	t.Helper()
	err := harness.WaitFor(ctx, 30*time.Second, "clearing the phase of "+name, func(ctx context.Context) (bool, string) {
		_, err := c.Resources(iamv1.ProjectCollection, "").UpdateStatus(ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Status: json.RawMessage(`{}`)})
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
}

func waitActive(ctx context.Context, t *testing.T, c *client.Client, name string, timeout time.Duration) {
	t.Helper()
	err := harness.WaitFor(ctx, timeout, "project "+name+" to be Active again", func(ctx context.Context) (bool, string) {
		o, err := c.Resources(iamv1.ProjectCollection, "").Get(ctx, name)
		if err != nil {
			return false, err.Error()
		}
		var s iamv1.ProjectStatus
		_ = json.Unmarshal(o.Status, &s)
		return s.Phase == "Active", "phase " + s.Phase
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSingletonProjectControllerFailover: the iam-projects controller runs
// as a cluster-wide singleton. Exactly one node leads it and only that node
// reconciles; when that node is killed another node takes over within a
// bound and does the work, while the remaining standby never reconciles
// (so no project is processed by two nodes at once).
func TestSingletonProjectControllerFailover(t *testing.T) {
	c := harness.Start(t, harness.Spec{
		Hosts:    3,
		LogLevel: "warn",
		// The election lives in chainfire, so the hosts share one.
		Chainfire: &harness.ChainfireSpec{Members: []string{"host1", "host2", "host3"}},
		FlareDB:   &harness.FlareDBSpec{Members: []string{"host1", "host2", "host3"}},
	})
	ctx := t.Context()
	hosts := c.Hosts()
	cl := map[string]*client.Client{}
	for _, h := range hosts {
		cl[h.Name()] = hostClient(t, h)
	}
	// leaderAmong waits until exactly one of hs reports leading and returns it.
	leaderAmong := func(hs []*harness.Host, timeout time.Duration) *harness.Host {
		t.Helper()
		var leader *harness.Host
		err := harness.WaitFor(ctx, timeout, "exactly one "+singletonController+" leader", func(ctx context.Context) (bool, string) {
			var ls []string
			leader = nil
			for _, h := range hs {
				l, err := controllerLeader(ctx, cl[h.Name()])
				if err != nil {
					return false, err.Error()
				}
				if l == "true" {
					ls = append(ls, h.Name())
					leader = h
				}
			}
			return len(ls) == 1, fmt.Sprintf("leaders %v", ls)
		})
		if err != nil {
			t.Fatal(err)
		}
		return leader
	}
	standbysIdle := func(hs []*harness.Host, leader *harness.Host) {
		t.Helper()
		for _, h := range hs {
			if h == leader {
				continue
			}
			n, err := reconciles(ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("standby %s reconciled %v times while %s leads", h.Name(), n, leader.Name())
			}
		}
	}

	first := leaderAmong(hosts, 60*time.Second)
	createEventually(ctx, t, cl[first.Name()], "one", 30*time.Second)
	clearPhase(ctx, t, cl[first.Name()], "one")
	waitActive(ctx, t, cl[first.Name()], "one", 20*time.Second)
	if n, err := reconciles(ctx, first); err != nil || n == 0 {
		t.Fatalf("leader %s reconciled %v times (%v), want some", first.Name(), n, err)
	}
	standbysIdle(hosts, first)

	// Kill the leader's node; a survivor takes over within the election
	// TTL (10s) plus the store's own failover and a bound.
	killed := time.Now()
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}
	var rest []*harness.Host
	for _, h := range hosts {
		if h != first {
			rest = append(rest, h)
		}
	}
	second := leaderAmong(rest, 40*time.Second)
	t.Logf("%s took over from %s %s after the kill", second.Name(), first.Name(), time.Since(killed).Round(time.Millisecond))
	clearPhase(ctx, t, cl[second.Name()], "one")
	waitActive(ctx, t, cl[second.Name()], "one", 20*time.Second)
	if n, err := reconciles(ctx, second); err != nil || n == 0 {
		t.Fatalf("new leader %s reconciled %v times (%v), want some", second.Name(), n, err)
	}
	standbysIdle(rest, second)
}
