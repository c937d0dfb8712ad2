package prismnet

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

var subnetCols = []clikit.Column[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus]{
	{Head: "NETWORK", Value: func(o subnet) string { return o.Spec.Network }},
	{Head: "CIDR", Value: func(o subnet) string { return o.Spec.CIDR }},
	{Head: "GATEWAY", Value: func(o subnet) string { return gatewayText(o.Status.Gateway) }},
	{Head: "SERVICE", Value: func(o subnet) string { return o.Status.ServiceAddress }},
}

func newSubnetCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "subnet",
		Aliases: []string{"subnets"},
		Short:   "Subnets: address ranges of a network, with what DHCP announces",
		Long: `A subnet is an address range of a network: IPv4 inside the network's CIDR,
or one of its IPv6 /64s. Ports get their addresses from its allocation pools;
DHCP announces its gateway, DNS servers and host routes. The gateway and the
service address (DHCP, metadata) are never handed out.`,
	}
	var netName, cidr, gw, out string
	var dns, pools, routes []string
	create := &cobra.Command{
		Use:   "create NAME --network NETWORK --cidr CIDR [--gateway ADDR|none] [--dns ADDR]... [--pool START-END]... [--route DEST=NEXTHOP]...",
		Short: "Create a subnet",
		Example: `  ultracloud subnet create web-a --network web --cidr 10.0.1.0/24 --dns 10.0.0.53
  ultracloud subnet create web-b --network web --cidr 10.0.2.0/24 --gateway none --pool 10.0.2.10-10.0.2.99
  ultracloud subnet create web-v6 --network web --cidr fd00:1::/64`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.KindCreateRun(cmd, cf, out, subnets, args[0], func() (any, error) {
				if netName == "" || cidr == "" {
					return nil, errors.New("--network and --cidr are required")
				}
				spec := prismnetv1.SubnetSpec{Network: netName}
				var err error
				if spec.CIDR, err = parseCIDR("--cidr", cidr); err != nil {
					return nil, err
				}
				if spec.Gateway, err = parseGateway("--gateway", gw); err != nil {
					return nil, err
				}
				if spec.DNSServers, err = parseAddrs("--dns", dns); err != nil {
					return nil, err
				}
				if spec.AllocationPools, err = parsePools("--pool", pools); err != nil {
					return nil, err
				}
				if spec.HostRoutes, err = parseRoutes("--route", routes); err != nil {
					return nil, err
				}
				return spec, nil
			})
		},
	}
	f := create.Flags()
	f.StringVar(&netName, "network", "", "the subnet's network")
	f.StringVar(&cidr, "cidr", "", "the subnet's range, inside the network's CIDR (or one of its IPv6 /64s)")
	f.StringVar(&gw, "gateway", "", "router address on the subnet (default: the first address; none for no router)")
	f.StringArrayVar(&dns, "dns", nil, "DNS server announced by DHCP (repeat, at most 4)")
	f.StringArrayVar(&pools, "pool", nil, "allocation pool START-END (repeat; default: the whole subnet)")
	f.StringArrayVar(&routes, "route", nil, "host route DEST=NEXTHOP announced by DHCP (repeat)")
	clikit.OutputFlag(create, &out)

	byNetwork := func(cmd *cobra.Command) func(subnet) bool {
		var n string
		cmd.Flags().StringVar(&n, "network", "", "only the subnets of this network")
		return func(o subnet) bool { return n == "" || o.Spec.Network == n }
	}
	cmd.AddCommand(create, clikit.KindListCmd(cf, subnets, "subnets", subnetCols, byNetwork), clikit.KindGetCmd(cf, subnets, subnetCols),
		clikit.KindDescribeCmd(cf, subnets, nil, describeSubnet), clikit.KindDeleteCmd(cf, subnets))
	return cmd
}

func describeSubnet(d *clikit.Desc, o subnet, _ struct{}) {
	d.KV("Network", o.Spec.Network)
	d.KV("CIDR", o.Spec.CIDR)
	d.KV("Gateway", gatewayText(o.Status.Gateway))
	sa := o.Status.ServiceAddress
	if sa != "" {
		sa += " (DHCP server and metadata proxy on every host)"
	}
	d.KV("Service address", sa)
	d.KV("DNS servers", clikit.JoinOr(o.Spec.DNSServers, "none"))
	d.KV("Allocation pools", clikit.JoinOr(poolsText(o.Spec.AllocationPools), "the whole subnet but the reserved addresses"))
	var rows [][]string
	for _, r := range o.Spec.HostRoutes {
		rows = append(rows, []string{r.Destination, r.Nexthop})
	}
	d.Table("Host routes", []string{"DESTINATION", "NEXTHOP"}, rows, "none")
}

// poolsText shows allocation pools as --pool takes them: START-END.
func poolsText(pools []prismnetv1.AllocationPool) []string {
	var out []string
	for _, p := range pools {
		out = append(out, p.Start+"-"+p.End)
	}
	return out
}
