//go:build linux

// Package cluster_test runs whole nodes in cluster mode on the multi-host
// harness: three hosts form the flaredb cluster that stores every
// resource, a fourth host without the flaredb role reaches it through
// storage.endpoints, and the API of every node serves the same resources.
// The tests need root, like every harness test.
package cluster_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/harness"
)

// project returns a Project object named name.
func project(name string) *api.Object {
	spec, _ := json.Marshal(map[string]string{"displayName": "Project " + name})
	return &api.Object{Kind: "Project", Metadata: api.ObjectMeta{Name: name}, Spec: spec}
}

func hostClient(t *testing.T, h *harness.Host) *client.Client {
	t.Helper()
	c, err := h.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// getEventually reads project name through c until it exists or timeout.
func getEventually(ctx context.Context, t *testing.T, c *client.Client, name string, timeout time.Duration) *api.Object {
	t.Helper()
	var got *api.Object
	err := harness.WaitFor(ctx, timeout, "project "+name+" via "+c.Endpoint(), func(ctx context.Context) (bool, string) {
		o, err := c.Resources("projects", "").Get(ctx, name)
		if err != nil {
			return false, err.Error()
		}
		got = o
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// createEventually creates project name through c, retrying while the
// store has no leader (an election after a kill). A create that fails with
// "already exists" after a retry means an earlier attempt was applied.
func createEventually(ctx context.Context, t *testing.T, c *client.Client, name string, timeout time.Duration) {
	t.Helper()
	err := harness.WaitFor(ctx, timeout, "creating project "+name+" via "+c.Endpoint(), func(ctx context.Context) (bool, string) {
		_, err := c.Resources("projects", "").Create(ctx, project(name))
		if p, ok := client.ProblemOf(err); ok && p.Code == api.CodeAlreadyExists {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
}

// In cluster mode every node's API serves the same resources from flaredb:
// written on one node, read and watched on the others, including a node
// that is not a flaredb member; the API keeps working when the flaredb
// leader's node is killed, and the restarted node catches up.
func TestResourcesLiveInFlareDB(t *testing.T) {
	c := harness.Start(t, harness.Spec{
		HostList: []harness.HostSpec{
			{Name: "host1"}, {Name: "host2"}, {Name: "host3"},
			{Name: "host4", Roles: []string{"iam"}},
		},
		LogLevel: "warn",
		FlareDB:  &harness.FlareDBSpec{Members: []string{"host1", "host2", "host3"}},
	})
	ctx := t.Context()
	cl := map[string]*client.Client{}
	for _, h := range c.Hosts() {
		cl[h.Name()] = hostClient(t, h)
	}

	// Every node reports the same flaredb cluster in its status, the
	// members as flaredb components, host4 without one.
	st, err := cl["host4"].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(st.Components, func(cs api.ComponentStatus) bool { return cs.Name == "flaredb" }) {
		t.Fatalf("host4 (roles [iam]) runs flaredb: %+v", st.Components)
	}

	// Written on host1, visible on every node at the same revision.
	created, err := cl["host1"].Resources("projects", "").Create(ctx, project("alpha"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"host2", "host3", "host4"} {
		got := getEventually(ctx, t, cl[name], "alpha", 10*time.Second)
		if got.Metadata.UID != created.Metadata.UID || got.Metadata.Revision != created.Metadata.Revision {
			t.Fatalf("%s reads alpha as uid %s rev %d, host1 created uid %s rev %d",
				name, got.Metadata.UID, got.Metadata.Revision, created.Metadata.UID, created.Metadata.Revision)
		}
	}

	// A watch on the non-member host4 sees a create made on host3.
	since := created.Metadata.Revision
	w, err := cl["host4"].Resources("projects", "").Watch(ctx, client.WatchOptions{Since: &since})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := cl["host3"].Resources("projects", "").Create(ctx, project("beta")); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, w, "beta")

	// Kill the node whose flaredb member leads: the other nodes, host4
	// included, keep serving reads and writes after the election.
	leader, err := c.WaitFlareDBLeader(ctx, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	var survivor string
	for _, name := range []string{"host1", "host2", "host3"} {
		if name != leader.Name() {
			survivor = name
			break
		}
	}
	createEventually(ctx, t, cl["host4"], "gamma", 30*time.Second)
	createEventually(ctx, t, cl[survivor], "delta", 30*time.Second)
	getEventually(ctx, t, cl[survivor], "gamma", 10*time.Second)
	waitEvent(t, w, "gamma")

	// The killed node restarts from its data and catches up.
	if err := leader.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := leader.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	restarted := hostClient(t, leader)
	for _, name := range []string{"alpha", "beta", "gamma", "delta"} {
		getEventually(ctx, t, restarted, name, 20*time.Second)
	}
	list, err := restarted.Resources("projects", "").List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range list.Items {
		names = append(names, o.Metadata.Name)
	}
	for _, want := range []string{"alpha", "beta", "delta", "gamma"} {
		if !slices.Contains(names, want) {
			t.Fatalf("restarted %s lists projects %v, missing %s", leader.Name(), names, want)
		}
	}
}

// waitEvent waits for an event about project name on w.
func waitEvent(t *testing.T, w *client.Watch, name string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch ended waiting for %s: %v", name, w.Err())
			}
			if ev.Object != nil && ev.Object.Metadata.Name == name {
				return
			}
		case <-timeout:
			t.Fatalf("no watch event for %s within 30s", name)
		}
	}
}
