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
	network = clikit.Object[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus]
	subnet  = clikit.Object[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus]
	port    = clikit.Object[prismnetv1.PortSpec, prismnetv1.PortStatus]
)

var networkCols = []clikit.Column[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus]{
	{Head: "CIDR", Value: func(o network) string { return o.Spec.CIDR }},
	{Head: "IPV6", Value: func(o network) string { return strings.Join(o.Spec.IPv6Prefixes, ",") }},
	{Head: "VNI", Value: func(o network) string { return uintOr(o.Status.VNI) }},
	{Head: "MTU", Value: func(o network) string { return intOr(o.Status.MTU) }},
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
			return clikit.KindCreateRun(cmd, cf, out, networks, args[0], func() (any, error) {
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

	cmd.AddCommand(create, clikit.KindListCmd(cf, networks, "networks", networkCols, nil), clikit.KindGetCmd(cf, networks, networkCols),
		clikit.KindDescribeCmd(cf, networks, networkMore, describeNetwork), clikit.KindDeleteCmd(cf, networks))
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
	if u.subnets, u.err = clikit.ListWhere(ctx, c, subnets, false, func(s subnet) bool { return s.Spec.Network == o.Name() }); u.err != nil {
		return u
	}
	ps, err := clikit.ListWhere(ctx, c, ports, false, func(p port) bool { return p.Spec.Network == o.Name() })
	u.ports, u.err = len(ps), err
	return u
}

func describeNetwork(d *clikit.Desc, o network, u networkUse) {
	d.KV("CIDR", o.Spec.CIDR)
	d.KV("IPv6 prefixes", clikit.JoinOr(o.Spec.IPv6Prefixes, "none"))
	mtu := intOr(o.Status.MTU)
	if o.Spec.MTU == 0 && o.Status.MTU != 0 {
		mtu += " (the cluster default)"
	}
	d.KV("MTU", mtu)
	d.KV("VNI", uintOr(o.Status.VNI))
	d.KV("ID", o.Status.ID)
	d.KV("Description", o.Spec.Description)
	if u.err != nil {
		d.KV("Subnets", fmt.Sprintf("cannot be read: %v", u.err))
		return
	}
	d.KV("Ports", fmt.Sprintf("%d (ultracloud port list --network %s)", u.ports, o.Name()))
	var rows [][]string
	for _, s := range u.subnets {
		rows = append(rows, []string{s.Name(), s.Spec.CIDR, gatewayText(s.Status.Gateway), s.Status.ServiceAddress})
	}
	d.Table("Subnets", []string{"NAME", "CIDR", "GATEWAY", "SERVICE"}, rows, "none (ultracloud subnet create NAME --network "+o.Name()+" --cidr ...)")
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
