package prismnet_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

func (e *env) networkHost(name string) (prismnetv1.NetworkHostSpec, error) {
	o, err := e.n.Admin.Resources(prismnetv1.HostCollection, "").Get(e.ctx, name)
	if err != nil {
		return prismnetv1.NetworkHostSpec{}, err
	}
	var s prismnetv1.NetworkHostSpec
	return s, json.Unmarshal(o.Spec, &s)
}

// reportUnderlay writes a NetworkHost's status as its agent does.
func (e *env) reportUnderlay(host, addr string) {
	e.t.Helper()
	testkit.EventuallyErr(e.t, 10*time.Second, "NetworkHost "+host+" exists", func() error {
		o, err := e.n.Admin.Resources(prismnetv1.HostCollection, "").Get(e.ctx, host)
		if err != nil {
			return err
		}
		o.Status = json.RawMessage(fmt.Sprintf(`{"underlay":%q,"ready":true}`, addr))
		_, err = e.n.Admin.Resources(prismnetv1.HostCollection, "").UpdateStatus(e.ctx, o)
		return err
	})
}

// TestHostsControllerPushesRemotePortsAndGroups: every host with a bound
// port gets a NetworkHost listing the ports of its networks on other hosts
// (with their host's underlay address) and the members of its ports'
// security groups; a deleted port leaves every host's view.
func TestHostsControllerPushesRemotePortsAndGroups(t *testing.T) {
	e := newEnv(t)
	e.mustCreate("networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.50.0.0/16"})
	e.mustCreate("subnets", "alpha", "sub1", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.50.0.0/24"})
	e.mustCreate("networks", "alpha", "other", prismnetv1.NetworkSpec{CIDR: "10.60.0.0/16"})
	e.mustCreate("subnets", "alpha", "osub", prismnetv1.SubnetSpec{Network: "other", CIDR: "10.60.0.0/24"})
	e.mustCreate("securitygroups", "alpha", "db", prismnetv1.SecurityGroupSpec{})
	e.mustCreate("securitygroups", "alpha", "web", prismnetv1.SecurityGroupSpec{Rules: []prismnetv1.SecurityGroupRule{
		{Direction: "ingress", RemoteGroup: "db"}}})
	bound := func(net, host string, groups ...string) prismnetv1.PortSpec {
		return prismnetv1.PortSpec{Network: net, SecurityGroups: groups, Binding: prismnetv1.PortBinding{Host: host}}
	}
	a := status[prismnetv1.PortStatus](t, e.mustCreate("ports", "alpha", "a", bound("net1", "w1", "web")))
	b := status[prismnetv1.PortStatus](t, e.mustCreate("ports", "alpha", "b", bound("net1", "w2", "db")))
	e.mustCreate("ports", "alpha", "c", bound("other", "w3"))
	e.reportUnderlay("w1", "192.0.2.1")
	e.reportUnderlay("w2", "192.0.2.2")
	e.reportUnderlay("w3", "192.0.2.3")

	testkit.EventuallyErr(t, 10*time.Second, "w1 sees b on w2 and the members of web and db", func() error {
		s, err := e.networkHost("w1")
		if err != nil {
			return err
		}
		if len(s.Remotes) != 1 || s.Remotes[0].MAC != b.MAC || s.Remotes[0].VTEP != "192.0.2.2" || s.Remotes[0].Network != "alpha/net1" ||
			s.Remotes[0].VNI == 0 || !slices.Equal(s.Remotes[0].IPs, []string{b.FixedIPs[0].IP}) {
			return fmt.Errorf("w1 remotes %+v", s.Remotes)
		}
		if len(s.Groups) != 2 || s.Groups[0].Group != "alpha/db" || !slices.Equal(s.Groups[0].IPs, []string{b.FixedIPs[0].IP}) ||
			s.Groups[1].Group != "alpha/web" || !slices.Equal(s.Groups[1].IPs, []string{a.FixedIPs[0].IP}) {
			return fmt.Errorf("w1 groups %+v", s.Groups)
		}
		return nil
	})
	testkit.EventuallyErr(t, 10*time.Second, "w3 (another network only) sees nothing remote", func() error {
		s, err := e.networkHost("w3")
		if err != nil || len(s.Remotes) != 0 {
			return fmt.Errorf("w3: %+v %v", s, err)
		}
		return nil
	})
	if err := e.delete("ports", "alpha", "b"); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyErr(t, 10*time.Second, "b leaves w1's view", func() error {
		s, err := e.networkHost("w1")
		if err != nil || len(s.Remotes) != 0 {
			return fmt.Errorf("w1 after deleting b: %+v %v", s.Remotes, err)
		}
		return nil
	})
}
