package prismnet

import (
	"errors"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

type extnet = clikit.Object[prismnetv1.ExternalNetworkSpec, prismnetv1.ExternalNetworkStatus]

var extnetCols = []clikit.Column[prismnetv1.ExternalNetworkSpec, prismnetv1.ExternalNetworkStatus]{
	{Head: "CIDR", Value: func(o extnet) string { return o.Spec.CIDR }},
	{Head: "GATEWAY", Value: func(o extnet) string { return o.Spec.Gateway }},
	{Head: "INTERFACE", Value: func(o extnet) string { return o.Spec.Interface }},
	{Head: "HOSTS", Value: func(o extnet) string { return strings.Join(o.Spec.Hosts, ",") }},
}

func newExtNetCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "extnet",
		Aliases: []string{"extnets", "externalnetwork", "externalnetworks"},
		Short:   "External networks (cluster-wide, admin): the uplinks routers reach and floating IPs come from",
		Long: `An external network is a network outside the cloud (an uplink, a provider
VLAN) that the listed hosts reach through a host interface. Routers with a
gateway on it run on one of those hosts; their external addresses and the
floating IPs are allocated from its pools. External networks are
cluster-scoped: defining one is an administrator's job.`,
	}
	var cidr, gw, iface, out string
	var pools, hostNames []string
	create := &cobra.Command{
		Use:     "create NAME --cidr CIDR [--gateway ADDR] [--pool START-END]... --interface IF --host HOST...",
		Short:   "Define an external network",
		Example: `  ultracloud extnet create uplink --cidr 192.0.2.0/24 --gateway 192.0.2.1 --pool 192.0.2.100-192.0.2.199 --interface eth1 --host worker1 --host worker2`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.KindCreateRun(cmd, cf, out, extnets, args[0], func() (any, error) {
				if cidr == "" || iface == "" || len(hostNames) == 0 {
					return nil, errors.New("--cidr, --interface and at least one --host are required")
				}
				spec := prismnetv1.ExternalNetworkSpec{Interface: iface, Hosts: hostNames}
				var err error
				if spec.CIDR, err = parseCIDR("--cidr", cidr); err != nil {
					return nil, err
				}
				if gw != "" {
					a, err := parseAddr("--gateway", gw)
					if err != nil {
						return nil, err
					}
					spec.Gateway = a.String()
				}
				if spec.AllocationPools, err = parsePools("--pool", pools); err != nil {
					return nil, err
				}
				return spec, nil
			})
		},
	}
	f := create.Flags()
	f.StringVar(&cidr, "cidr", "", "the external network's IPv4 range")
	f.StringVar(&gw, "gateway", "", "its upstream router (optional)")
	f.StringArrayVar(&pools, "pool", nil, "allocation pool START-END for router addresses and floating IPs (repeat; default: the whole CIDR)")
	f.StringVar(&iface, "interface", "", "host device that leads to the external network (a NIC, a VLAN device, a veth)")
	f.StringArrayVar(&hostNames, "host", nil, "a host that has --interface (repeat; at least one)")
	clikit.OutputFlag(create, &out)
	cmd.AddCommand(create, clikit.KindListCmd(cf, extnets, "external networks", extnetCols, nil), clikit.KindGetCmd(cf, extnets, extnetCols),
		clikit.KindDescribeCmd(cf, extnets, nil, describeExtNet), clikit.KindDeleteCmd(cf, extnets))
	return cmd
}

func describeExtNet(d *clikit.Desc, o extnet, _ struct{}) {
	d.KV("CIDR", o.Spec.CIDR)
	d.KV("Gateway", o.Spec.Gateway)
	d.KV("Allocation pools", clikit.JoinOr(poolsText(o.Spec.AllocationPools), "the whole CIDR but the reserved addresses"))
	d.KV("Interface", o.Spec.Interface)
	d.KV("Hosts", clikit.JoinOr(o.Spec.Hosts, "none"))
	d.KV("ID", o.Status.ID)
}
