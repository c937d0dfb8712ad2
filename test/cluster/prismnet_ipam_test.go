//go:build linux

package cluster_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/harness"
)

// TestIPAMUnderConcurrentCreatesAcrossAPINodes: 1,000 ports created at
// once through three API nodes sharing one flaredb group get 1,000
// distinct addresses; deleting them releases every one.
func TestIPAMUnderConcurrentCreatesAcrossAPINodes(t *testing.T) {
	cp := []string{"chainfire", "flaredb", "iam", "prismnet"}
	c := harness.Start(t, harness.Spec{
		HostList:  []harness.HostSpec{{Name: "host1", Roles: cp}, {Name: "host2", Roles: cp}, {Name: "host3", Roles: cp}},
		LogLevel:  "warn",
		Chainfire: &harness.ChainfireSpec{Members: []string{"host1", "host2", "host3"}},
		FlareDB:   &harness.FlareDBSpec{Members: []string{"host1", "host2", "host3"}},
	})
	ctx := t.Context()
	var clients []*client.Client
	for _, h := range c.Hosts() {
		cl, err := h.Client()
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cl)
	}
	create := func(cl *client.Client, coll, project, name string, spec any) (*api.Object, error) {
		raw, _ := json.Marshal(spec)
		return cl.Resources(coll, project).Create(ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: raw})
	}
	must := func(_ *api.Object, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(create(clients[0], "projects", "", "alpha", struct{}{}))
	must(create(clients[1], "networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.80.0.0/16"}))
	must(create(clients[2], "subnets", "alpha", "sub1", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.80.0.0/22"}))

	const ports, workers = 1000, 48
	addrs := make([]string, ports)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, ports)
	start := time.Now()
	for w := range workers {
		cl := clients[w%len(clients)]
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= ports {
					return
				}
				o, err := create(cl, "ports", "alpha", fmt.Sprintf("p%04d", i), prismnetv1.PortSpec{Network: "net1"})
				if err != nil {
					errs <- fmt.Errorf("port p%04d: %w", i, err)
					continue
				}
				var st prismnetv1.PortStatus
				if err := json.Unmarshal(o.Status, &st); err != nil || len(st.FixedIPs) != 1 {
					errs <- fmt.Errorf("port p%04d status %s", i, o.Status)
					continue
				}
				addrs[i] = st.FixedIPs[0].IP
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d ports created through %d API nodes by %d clients in %s", ports, len(clients), workers, time.Since(start).Round(time.Millisecond))
	seen := map[string]int{}
	for i, a := range addrs {
		if j, dup := seen[a]; dup {
			t.Fatalf("ports p%04d and p%04d share %s", i, j, a)
		}
		seen[a] = i
	}
	// The store agrees: 1,000 ports listed, each with its own address.
	items, _, err := clients[1].Resources("ports", "alpha").ListAll(ctx, client.ListOptions{})
	if err != nil || len(items) != ports {
		t.Fatalf("listing ports: %d items, %v", len(items), err)
	}
	// Deleting releases the addresses: the /22 (1,020 usable for ports)
	// takes 1,020 new ports after the old ones are gone.
	var dwg sync.WaitGroup
	for w := range workers {
		cl := clients[w%len(clients)]
		dwg.Go(func() {
			for i := w; i < ports; i += workers {
				if _, err := cl.Resources("ports", "alpha").Delete(ctx, fmt.Sprintf("p%04d", i), 0); err != nil {
					t.Error(err)
				}
			}
		})
	}
	dwg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	kvs, _, err := clients[0].Resources("ports", "alpha").ListAll(ctx, client.ListOptions{})
	if err != nil || len(kvs) != 0 {
		t.Fatalf("after deleting: %d ports, %v", len(kvs), err)
	}
	for i := range 1020 {
		if _, err := create(clients[i%3], "ports", "alpha", fmt.Sprintf("q%04d", i), prismnetv1.PortSpec{Network: "net1"}); err != nil {
			t.Fatalf("port q%04d after the deletes: %v", i, err)
		}
	}
	if _, err := create(clients[0], "ports", "alpha", "full", prismnetv1.PortSpec{Network: "net1"}); !client.HasCode(err, prismnetv1.CodePoolExhausted) {
		t.Fatalf("the 1,021st port: %v, want pool_exhausted", err)
	}
}
