package prismnet

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

type (
	network = object[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus]
	subnet  = object[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus]
	port    = object[prismnetv1.PortSpec, prismnetv1.PortStatus]
)

var networkCols = []column[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus]{
	{"CIDR", func(o network) string { return o.Spec.CIDR }},
	{"IPV6", func(o network) string { return strings.Join(o.Spec.IPv6Prefixes, ",") }},
	{"VNI", func(o network) string { return uintOr(o.Status.VNI) }},
	{"MTU", func(o network) string { return intOr(o.Status.MTU) }},
}

func newNetworkCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "network",
		Aliases: []string{"networks", "net"},
		Short:   "Tenant networks: one layer-2 segment (a VXLAN VNI) with an IPv4 range and optional IPv6 /64s",
		Long: `A network is a private layer-2 segment of a project, carried between hosts
over VXLAN. Its subnets are cut from its IPv4 CIDR (and are its IPv6 /64s);
ports attach workloads to it. A network is deleted only without ports and
subnets.`,
	}
	var cidr, desc, out string
	var v6 []string
	var mtu int
	create := &cobra.Command{
		Use:   "create NAME --cidr CIDR [--ipv6 PREFIX]... [--mtu N] [--description TEXT]",
		Short: "Create a network",
		Example: `  ultracloud network create web --cidr 10.0.0.0/16
  ultracloud network create dual --cidr 10.1.0.0/16 --ipv6 fd00:1::/64 --mtu 1400`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return createRun(cmd, cf, out, networks, args[0], func() (any, error) {
				if cidr == "" {
					return nil, errors.New("--cidr is required: the network's IPv4 range, e.g. 10.0.0.0/16")
				}
				spec := prismnetv1.NetworkSpec{Description: desc}
				var err error
				if spec.CIDR, err = parseCIDR("--cidr", cidr); err != nil {
					return nil, err
				}
				for _, p := range v6 {
					if _, err := parseCIDR("--ipv6", p); err != nil {
						return nil, err
					}
				}
				spec.IPv6Prefixes = v6
				if spec.MTU, err = parseMTU("--mtu", mtu); err != nil {
					return nil, err
				}
				return spec, nil
			})
		},
	}
	create.Flags().StringVar(&cidr, "cidr", "", "IPv4 range of the network (a /8 to /29), e.g. 10.0.0.0/16")
	create.Flags().StringArrayVar(&v6, "ipv6", nil, "an IPv6 /64 of the network (repeat, at most 8)")
	create.Flags().IntVar(&mtu, "mtu", 0, "MTU of the workloads' interfaces, 576 to 9000 (default: the cluster's, 1450 for VXLAN over a 1500 underlay)")
	create.Flags().StringVar(&desc, "description", "", "what the network is for")
	clikit.OutputFlag(create, &out)

	cmd.AddCommand(create, listCmd(cf, networks, "networks", networkCols, nil), getCmd(cf, networks, networkCols),
		describeCmd(cf, networks, networkMore, describeNetwork), deleteCmd(cf, networks))
	return cmd
}

// networkUse is what a network's describe shows beyond the network.
type networkUse struct {
	subnets []subnet
	ports   int
	err     error
}

func networkMore(ctx context.Context, c *clikit.Conn, o network) networkUse {
	var u networkUse
	ss, err := list[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus](ctx, c, subnets, false)
	if err != nil {
		u.err = err
		return u
	}
	for _, s := range ss.items {
		if s.Spec.Network == o.name() {
			u.subnets = append(u.subnets, s)
		}
	}
	ps, err := list[prismnetv1.PortSpec, prismnetv1.PortStatus](ctx, c, ports, false)
	if err != nil {
		u.err = err
		return u
	}
	for _, p := range ps.items {
		if p.Spec.Network == o.name() {
			u.ports++
		}
	}
	return u
}

func describeNetwork(d *desc, o network, u networkUse) {
	d.kv("CIDR", o.Spec.CIDR)
	d.kv("IPv6 prefixes", joinOr(o.Spec.IPv6Prefixes, "none"))
	mtu := intOr(o.Status.MTU)
	if o.Spec.MTU == 0 && o.Status.MTU != 0 {
		mtu += " (the cluster default)"
	}
	d.kv("MTU", mtu)
	d.kv("VNI", uintOr(o.Status.VNI))
	d.kv("ID", o.Status.ID)
	d.kv("Description", o.Spec.Description)
	if u.err != nil {
		d.kv("Subnets", fmt.Sprintf("cannot be read: %v", u.err))
		return
	}
	d.kv("Ports", fmt.Sprintf("%d (ultracloud port list --network %s)", u.ports, o.name()))
	var rows [][]string
	for _, s := range u.subnets {
		rows = append(rows, []string{s.name(), s.Spec.CIDR, gatewayText(s.Status.Gateway), s.Status.ServiceAddress})
	}
	d.table("Subnets", []string{"NAME", "CIDR", "GATEWAY", "SERVICE"}, rows, "none (ultracloud subnet create NAME --network "+o.name()+" --cidr ...)")
}

func intOr(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprint(n)
}

func uintOr(n uint32) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprint(n)
}

// gatewayText shows an effective gateway, "none" for a subnet without one.
func gatewayText(g string) string {
	if g == "" {
		return "none"
	}
	return g
}
