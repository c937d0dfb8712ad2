package prismnet

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

type networkHost = clikit.Object[prismnetv1.NetworkHostSpec, prismnetv1.NetworkHostStatus]

var portCols = []clikit.Column[prismnetv1.PortSpec, prismnetv1.PortStatus]{
	{Head: "NETWORK", Value: func(o port) string { return o.Spec.Network }},
	{Head: "MAC", Value: func(o port) string { return o.Status.MAC }},
	{Head: "IPS", Value: func(o port) string {
		var ips []string
		for _, f := range o.Status.FixedIPs {
			ips = append(ips, f.IP)
		}
		return strings.Join(ips, ",")
	}},
	{Head: "HOST", Value: func(o port) string { return o.Spec.Binding.Host }},
	{Head: "PHASE", Value: func(o port) string { return o.Status.Phase }},
}

// bindingFlags are the flags that say where a port is plugged in.
type bindingFlags struct {
	host, device, namespace, iface string
}

func (b *bindingFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&b.host, "host", "", "node to bind the port to (its prismnet-agent plugs it in)")
	f.StringVar(&b.device, "device", "", "tap (a VM's device, the default) or veth (a pair into --namespace)")
	f.StringVar(&b.namespace, "namespace", "", "network namespace on the host the veth peer goes into (implies --device veth)")
	f.StringVar(&b.iface, "interface", "", "the veth peer's name inside --namespace (default eth0)")
}

// apply sets the binding fields whose flags were given (all on create).
func (b *bindingFlags) apply(cmd *cobra.Command, pb *prismnetv1.PortBinding) error {
	changed := cmd.Flags().Changed
	dev, err := parseDevice("--device", b.device)
	if err != nil {
		return err
	}
	if changed("host") {
		pb.Host = b.host
	}
	if changed("device") {
		pb.Device = dev
		if dev == prismnetv1.DeviceTap {
			pb.Namespace, pb.Interface = "", "" // a tap has neither
		}
	}
	if changed("namespace") {
		pb.Namespace = b.namespace
		if !changed("device") && b.namespace != "" {
			pb.Device = prismnetv1.DeviceVeth
		}
	}
	if changed("interface") {
		pb.Interface = b.iface
	}
	if pb.Device == prismnetv1.DeviceTap && (pb.Namespace != "" || pb.Interface != "") {
		return errors.New("--namespace and --interface are for veth ports; a tap device has neither (drop --device tap)")
	}
	return nil
}

func newPortCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "port",
		Aliases: []string{"ports"},
		Short:   "Ports: a workload's attachment to a network (MAC, addresses, security groups, binding)",
		Long: `A port attaches a workload to a network: its MAC, its addresses from the
subnets' pools, the security groups that filter its traffic, and its binding,
the host whose prismnet-agent plugs it in (a tap device for a VM, a veth pair
into a namespace). ` + "`port describe`" + ` shows where it is bound and its dataplane state.`,
	}
	var netName, mac, owner, out string
	var ips, groups []string
	var noSec bool
	var bind bindingFlags
	create := &cobra.Command{
		Use:   "create NAME --network NETWORK [--ip SUBNET[=ADDR]]... [--mac MAC] [--sg GROUP]... [--no-port-security] [--host HOST] [--device tap|veth] [--namespace NS] [--interface IF] [--owner KIND/NAME]",
		Short: "Create a port (addresses from every subnet of the network unless --ip says which)",
		Example: `  ultracloud port create web-1 --network web --sg web --owner VM/web-1
  ultracloud port create probe --network web --ip web-a=10.0.1.20 --host worker1 --namespace probe`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.KindCreateRun(cmd, cf, out, ports, args[0], func() (any, error) {
				if netName == "" {
					return nil, errors.New("--network is required: the network the port attaches to")
				}
				spec := prismnetv1.PortSpec{Network: netName, SecurityGroups: groups}
				var err error
				if spec.FixedIPs, err = parseFixedIPs("--ip", ips); err != nil {
					return nil, err
				}
				if mac != "" {
					if spec.MAC, err = parseMAC("--mac", mac); err != nil {
						return nil, err
					}
				}
				if noSec {
					off := false
					spec.PortSecurity = &off
				}
				if owner != "" {
					if spec.Owner, err = parseOwner("--owner", owner); err != nil {
						return nil, err
					}
				}
				if err := bind.apply(cmd, &spec.Binding); err != nil {
					return nil, err
				}
				return spec, nil
			})
		},
	}
	f := create.Flags()
	f.StringVar(&netName, "network", "", "the port's network")
	f.StringArrayVar(&ips, "ip", nil, "address request SUBNET or SUBNET=ADDRESS (repeat; default: one from every subnet)")
	f.StringVar(&mac, "mac", "", "MAC address (default: generated)")
	f.StringArrayVar(&groups, "sg", nil, "security group applied to the port (repeat)")
	f.BoolVar(&noSec, "no-port-security", false, "no anti-spoofing and no security groups on this port")
	f.StringVar(&owner, "owner", "", "what uses the port, KIND/NAME (e.g. VM/web-1)")
	bind.register(create)
	clikit.OutputFlag(create, &out)

	filters := func(cmd *cobra.Command) func(port) bool {
		var n, h string
		cmd.Flags().StringVar(&n, "network", "", "only the ports of this network")
		cmd.Flags().StringVar(&h, "host", "", "only the ports bound to this host")
		return func(o port) bool {
			return (n == "" || o.Spec.Network == n) && (h == "" || o.Spec.Binding.Host == h)
		}
	}
	cmd.AddCommand(create, clikit.KindListCmd(cf, ports, "ports", portCols, filters), clikit.KindGetCmd(cf, ports, portCols),
		clikit.KindDescribeCmd(cf, ports, portHost, describePort), newPortSetCmd(cf), clikit.KindDeleteCmd(cf, ports))
	return cmd
}

func newPortSetCmd(cf *clikit.ClientFlags) *cobra.Command {
	var groups []string
	var owner, out string
	var noGroups, portSec, unbind, noOwner bool
	var bind bindingFlags
	cmd := &cobra.Command{
		Use:   "set NAME [--sg GROUP]... [--no-sg] [--port-security=true|false] [--host HOST] [--device tap|veth] [--namespace NS] [--interface IF] [--unbind] [--owner KIND/NAME | --no-owner]",
		Short: "Change what is mutable on a port: its security groups, port security, binding and owner",
		Long: `set changes the named fields of a port and keeps the others. --sg replaces the
port's security groups with the ones given. A new binding makes the port
Pending until the new host's agent has plugged it in. The network, the MAC
and the addresses cannot change: create another port for that.`,
		Example: `  ultracloud port set web-1 --sg web --sg ssh
  ultracloud port set probe --host worker2
  ultracloud port set web-1 --unbind`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			changed := cmd.Flags().Changed
			if _, err := clikit.ParseOutput(out); err != nil {
				return err
			}
			some := false
			for _, n := range []string{"sg", "no-sg", "port-security", "host", "device", "namespace", "interface", "unbind", "owner", "no-owner"} {
				some = some || changed(n)
			}
			switch {
			case !some:
				return errors.New("nothing to change: give --sg, --no-sg, --port-security, --host, --device, --namespace, --interface, --unbind, --owner or --no-owner")
			case changed("sg") && noGroups:
				return errors.New("give --sg or --no-sg, not both")
			case owner != "" && noOwner:
				return errors.New("give --owner or --no-owner, not both")
			case unbind && (changed("host") || changed("device") || changed("namespace") || changed("interface")):
				return errors.New("--unbind clears the binding; give it without --host, --device, --namespace or --interface")
			}
			var own *prismnetv1.PortOwner
			if owner != "" {
				var err error
				if own, err = parseOwner("--owner", owner); err != nil {
					return err
				}
			}
			if _, err := parseDevice("--device", bind.device); err != nil {
				return err
			}
			return updatedRun(cmd, cf, out, ports, args[0], func() string { return "updated" }, func(ctx context.Context, c *clikit.Conn) (*api.Object, error) {
				return update(ctx, c, ports, args[0], true, func(s *prismnetv1.PortSpec) error {
					if changed("sg") {
						s.SecurityGroups = groups
					}
					if noGroups {
						s.SecurityGroups = nil
					}
					if changed("port-security") {
						v := portSec
						s.PortSecurity = &v
					}
					if own != nil {
						s.Owner = own
					}
					if noOwner {
						s.Owner = nil
					}
					if unbind {
						s.Binding = prismnetv1.PortBinding{}
					}
					return bind.apply(cmd, &s.Binding)
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&groups, "sg", nil, "security group (repeat): the port's groups become exactly these")
	f.BoolVar(&noGroups, "no-sg", false, "remove every security group from the port")
	f.BoolVar(&portSec, "port-security", true, "anti-spoofing and security groups on (true) or off (false)")
	f.BoolVar(&unbind, "unbind", false, "unplug the port: no host, default device")
	f.StringVar(&owner, "owner", "", "what uses the port, KIND/NAME")
	f.BoolVar(&noOwner, "no-owner", false, "clear the owner")
	bind.register(cmd)
	clikit.OutputFlag(cmd, &out)
	return cmd
}

// hostView is the binding host's NetworkHost as a port's describe shows
// it, or why it could not be read.
type hostView struct {
	host *networkHost
	err  error
}

func portHost(ctx context.Context, c *clikit.Conn, o port) hostView {
	h := o.Spec.Binding.Host
	if h == "" {
		return hostView{}
	}
	// No discovery check: a missing kind or a missing permission is only
	// a line of the block, never a failure of the describe.
	raw, err := c.Client.Resources(hosts.Collection, "").Get(ctx, h)
	if client.IsNotFound(err) {
		return hostView{} // the control plane has not created it yet
	}
	if err != nil {
		return hostView{err: err}
	}
	nh, err := clikit.Decode[prismnetv1.NetworkHostSpec, prismnetv1.NetworkHostStatus](hosts, raw)
	if err != nil {
		return hostView{err: err}
	}
	return hostView{host: &nh}
}

func describePort(d *clikit.Desc, o port, hv hostView) {
	s, st := o.Spec, o.Status
	d.KV("Network", s.Network)
	d.KV("MAC", st.MAC)
	var addrs []string
	for _, f := range st.FixedIPs {
		addrs = append(addrs, f.IP+" ("+f.Subnet+")")
	}
	d.KV("Addresses", clikit.JoinOr(addrs, "none"))
	if s.PortSecurity != nil && !*s.PortSecurity {
		d.KV("Port security", "off (no anti-spoofing, no security groups)")
	} else {
		d.KV("Port security", "on")
		d.KV("Security groups", clikit.JoinOr(s.SecurityGroups, "none (all ingress denied, egress allowed)"))
	}
	if s.Owner != nil {
		d.KV("Owner", s.Owner.Kind+"/"+s.Owner.Name)
	}
	b := s.Binding
	if b.Host == "" {
		d.KV("Binding", "unbound (ultracloud port set "+o.Name()+" --host HOST)")
	} else {
		dev := clikit.Dash(b.Device)
		if b.Device == prismnetv1.DeviceVeth {
			dev += fmt.Sprintf(" into namespace %s as %s", clikit.Dash(b.Namespace), clikit.Dash(b.Interface))
		}
		d.KV("Binding", "host "+b.Host+", device "+dev)
	}
	phase := st.Phase
	switch {
	case st.Host != "" && st.Host != b.Host:
		phase += " (stale: reported for an earlier binding)"
	case phase == prismnetv1.PortPending && b.Host == "":
		phase += " (not bound to a host)"
	case phase == prismnetv1.PortPending:
		phase += " (waiting for the prismnet-agent on " + b.Host + ")"
	case phase == prismnetv1.PortError:
		phase += " (see Last error)"
	}
	d.KV("Phase", phase)
	if st.Host != "" && st.Host != b.Host {
		d.KV("Reported by", st.Host+" (not the binding host: the status predates the current binding)")
	}
	d.KV("Host device", st.Device)
	d.KV("Last error", st.LastError)
	d.KV("Observed at", clikit.TimeAgo(st.ObservedAt))
	if b.Host == "" {
		return
	}
	if hv.err != nil {
		d.KV("Host "+b.Host, "state not available: "+hv.err.Error())
		return
	}
	if hv.host == nil {
		d.KV("Host "+b.Host, "no network state yet (the control plane creates it moments after a port is bound there)")
		return
	}
	hs := hv.host.Status
	state := "not ready"
	if hs.Ready {
		state = "ready"
	}
	if hs.ObservedAt == nil {
		state = "never reported (is its prismnet-agent running?)"
	}
	d.KV("Host "+b.Host, fmt.Sprintf("underlay %s, %s, %d ports plugged in", clikit.Dash(hs.Underlay), state, hs.Ports))
	if hs.LastError != "" {
		d.KV("Host last error", hs.LastError)
	}
	if hs.ObservedAt != nil {
		d.KV("Host observed at", clikit.TimeAgo(hs.ObservedAt))
	}
}
