package plasmavmc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ultracloud/ultracloud/internal/runtime/apicache"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// ManagedLabel marks the prismnet ports plasmavmc made for a VM's NICs
// (deleted with the VM); ports a user gave are only bound and unbound.
const ManagedLabel = "plasmavmc.ultracloud.dev/vm"

// nicPortName is the port plasmavmc makes for NIC i of vm.
func nicPortName(vm string, i int) string { return fmt.Sprintf("%s-nic%d", vm, i) }

// syncNICs makes the prismnet ports of every placed VM exist and be bound
// to its host (a tap the VM's QEMU opens), deletes the ports of VMs that
// are gone, and copies the ports' addresses into the VMs' status. It is
// part of the scheduler's pass, so a VM's ports follow its placement.
func (s *scheduler) syncNICs(ctx context.Context, cl *client.Client, c *apicache.Cache, vms []vmView) ([]vmAddrs, error) {
	ports := map[string]*api.Object{} // "project/name"
	for _, o := range c.List(prismnetv1.PortCollection) {
		ports[apicache.Key(o)] = o
	}
	live := map[string]bool{}
	var errs []error
	var addrs []vmAddrs
	for _, v := range vms {
		p, name := v.o.Metadata.Project, v.o.Metadata.Name
		live[p+"/"+name] = true
		if v.st.Host == "" || v.st.Phase == plasmavmcv1.PhaseLost {
			continue
		}
		var got []string
		for i, nic := range v.spec.NICs {
			portName, managed := nic.Port, false
			if portName == "" {
				portName, managed = nicPortName(name, i), true
			}
			want := prismnetv1.PortBinding{Host: v.st.Host, Device: prismnetv1.DeviceTap}
			cur := ports[p+"/"+portName]
			if cur == nil {
				if !managed {
					errs = append(errs, fmt.Errorf("vm %s/%s: port %q not found", p, name, portName))
					continue
				}
				spec := prismnetv1.PortSpec{Network: nic.Network, SecurityGroups: nic.SecurityGroups,
					Owner: &prismnetv1.PortOwner{Kind: plasmavmcv1.VMKind, Name: name}, Binding: want}
				raw, _ := json.Marshal(spec)
				_, err := cl.Resources(prismnetv1.PortCollection, p).Create(ctx, &api.Object{
					Metadata: api.ObjectMeta{Name: portName, Labels: map[string]string{ManagedLabel: name}}, Spec: raw})
				if err != nil && !client.IsAlreadyExists(err) {
					errs = append(errs, fmt.Errorf("vm %s/%s: creating port %s: %w", p, name, portName, err))
				}
				continue
			}
			spec, st, err := apicache.Decode[prismnetv1.PortSpec, prismnetv1.PortStatus](cur)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, f := range st.FixedIPs {
				got = append(got, f.IP)
			}
			if spec.Binding.Host == want.Host && spec.Binding.Device == want.Device && spec.Owner != nil && spec.Owner.Name == name {
				continue
			}
			spec.Binding, spec.Owner = want, &prismnetv1.PortOwner{Kind: plasmavmcv1.VMKind, Name: name}
			raw, _ := json.Marshal(spec)
			upd := *cur
			upd.Spec = raw
			if _, err := cl.Resources(prismnetv1.PortCollection, p).Update(ctx, &upd); err != nil && !client.IsConflict(err) {
				errs = append(errs, fmt.Errorf("vm %s/%s: binding port %s to %s: %w", p, name, portName, want.Host, err))
			}
		}
		if len(v.spec.NICs) > 0 && !slices.Equal(got, v.st.Addresses) {
			addrs = append(addrs, vmAddrs{v: v, addrs: got})
		}
	}
	// Ports of VMs that are gone.
	for key, o := range ports {
		vm := o.Metadata.Labels[ManagedLabel]
		if vm == "" || live[o.Metadata.Project+"/"+vm] {
			continue
		}
		if _, err := cl.Resources(prismnetv1.PortCollection, o.Metadata.Project).Delete(ctx, o.Metadata.Name, 0); err != nil && !client.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting port %s of a deleted VM: %w", strings.TrimPrefix(key, "/"), err))
		}
	}
	return addrs, errors.Join(errs...)
}

// vmAddrs is a VM whose status should list other addresses.
type vmAddrs struct {
	v     vmView
	addrs []string
}
