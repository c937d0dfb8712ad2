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
)

type router = clikit.Object[prismnetv1.RouterSpec, prismnetv1.RouterStatus]

var routerCols = []clikit.Column[prismnetv1.RouterSpec, prismnetv1.RouterStatus]{
	{Head: "INTERFACES", Value: func(o router) string { return strings.Join(routerSubnetsOf(&o.Spec), ",") }},
	{Head: "EXTERNAL-NETWORK", Value: func(o router) string {
		if g := o.Spec.ExternalGateway; g != nil {
			return g.ExternalNetwork
		}
		return ""
	}},
	{Head: "SNAT", Value: func(o router) string {
		if o.Spec.ExternalGateway == nil {
			return ""
		}
		return onOff(snatOn(o.Spec.ExternalGateway))
	}},
	{Head: "EXTERNAL-IP", Value: func(o router) string { return o.Status.ExternalIP }},
	{Head: "HOST", Value: func(o router) string { return o.Status.Host }},
}

func snatOn(g *prismnetv1.RouterGateway) bool { return g.SNAT == nil || *g.SNAT }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func newRouterCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "router",
		Aliases: []string{"routers"},
		Short:   "Routers: route between a project's subnets and to an external network (SNAT, floating IPs)",
		Long: `A router connects subnets of a project (it takes each subnet's gateway
address) and, with an external gateway, the external network: the attached
subnets reach it through the router's external address (SNAT, unless
--no-snat), and floating IPs reach ports through it (DNAT). Its network
namespace runs on one of the external network's hosts.`,
	}
	var ext, out string
	var noSNAT bool
	var ifaces []string
	create := &cobra.Command{
		Use:   "create NAME [--external-network EXTNET [--no-snat]] [--subnet SUBNET]...",
		Short: "Create a router",
		Example: `  ultracloud router create edge --external-network uplink --subnet web-a
  ultracloud router create inner --subnet web-a --subnet db-a`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.KindCreateRun(cmd, cf, out, routers, args[0], func() (any, error) {
				if noSNAT && ext == "" {
					return nil, errors.New("--no-snat needs --external-network: SNAT is the external gateway's")
				}
				var spec prismnetv1.RouterSpec
				for _, s := range ifaces {
					spec.Interfaces = append(spec.Interfaces, prismnetv1.RouterInterface{Subnet: s})
				}
				if ext != "" {
					spec.ExternalGateway = &prismnetv1.RouterGateway{ExternalNetwork: ext}
					if noSNAT {
						off := false
						spec.ExternalGateway.SNAT = &off
					}
				}
				return spec, nil
			})
		},
	}
	create.Flags().StringVar(&ext, "external-network", "", "external network of the router's gateway")
	create.Flags().BoolVar(&noSNAT, "no-snat", false, "do not masquerade the attached subnets behind the router's external address")
	create.Flags().StringArrayVar(&ifaces, "subnet", nil, "attach this subnet (repeat; more later with add-interface)")
	clikit.OutputFlag(create, &out)

	iface := func(use, short string, add bool) *cobra.Command {
		var out string
		c := &cobra.Command{
			Use:   use + " ROUTER SUBNET",
			Short: short,
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				r, sub := args[0], args[1]
				what := "interface on subnet " + sub + " added"
				if !add {
					what = "interface on subnet " + sub + " removed"
				}
				return updatedRun(cmd, cf, out, routers, r, func() string { return what }, func(ctx context.Context, c *clikit.Conn) (*api.Object, error) {
					// Adding or removing one subnet does not depend on the
					// rest: a conflict reads again and applies again.
					return update(ctx, c, routers, r, true, func(s *prismnetv1.RouterSpec) error {
						i := -1
						for j, x := range s.Interfaces {
							if x.Subnet == sub {
								i = j
							}
						}
						switch {
						case add && i >= 0:
							what = "already has an interface on subnet " + sub + "; nothing changed"
							return errNoChange
						case add:
							s.Interfaces = append(s.Interfaces, prismnetv1.RouterInterface{Subnet: sub})
						case i < 0:
							return fmt.Errorf("has no interface on subnet %q (attached: %s)", sub, clikit.JoinOr(routerSubnetsOf(s), "none"))
						default:
							s.Interfaces = append(s.Interfaces[:i], s.Interfaces[i+1:]...)
						}
						return nil
					})
				})
			},
		}
		clikit.OutputFlag(c, &out)
		return c
	}
	cmd.AddCommand(create,
		iface("add-interface", "Attach a subnet to a router (the router takes the subnet's gateway address)", true),
		iface("remove-interface", "Detach a subnet from a router", false),
		clikit.KindListCmd(cf, routers, "routers", routerCols, nil), clikit.KindGetCmd(cf, routers, routerCols),
		clikit.KindDescribeCmd(cf, routers, routerMore, describeRouter), clikit.KindDeleteCmd(cf, routers))
	return cmd
}

func routerSubnetsOf(s *prismnetv1.RouterSpec) []string {
	var out []string
	for _, i := range s.Interfaces {
		out = append(out, i.Subnet)
	}
	return out
}

// routerUse is what a router's describe shows beyond the router: its
// subnets (by name) and the floating IPs it translates.
type routerUse struct {
	subnets map[string]subnet
	fips    []string
}

func routerMore(ctx context.Context, c *clikit.Conn, o router) routerUse {
	u := routerUse{subnets: map[string]subnet{}}
	if ss, err := clikit.List[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus](ctx, c, subnets, false); err == nil {
		for _, s := range ss.Items {
			u.subnets[s.Name()] = s
		}
	}
	if fs, err := clikit.ListWhere(ctx, c, fips, false, func(f fip) bool { return f.Status.Router == o.Name() }); err == nil {
		for _, f := range fs {
			u.fips = append(u.fips, fmt.Sprintf("%s (%s -> %s)", f.Name(), clikit.Dash(f.Status.Address), clikit.Dash(f.Status.InternalIP)))
		}
	}
	return u
}

func describeRouter(d *clikit.Desc, o router, u routerUse) {
	if g := o.Spec.ExternalGateway; g != nil {
		d.KV("External network", g.ExternalNetwork)
		d.KV("External address", o.Status.ExternalIP)
		d.KV("SNAT", onOff(snatOn(g)))
	} else {
		d.KV("External network", "none (no external gateway)")
	}
	d.KV("Host", o.Status.Host)
	d.KV("ID", o.Status.ID)
	d.KV("Floating IPs", clikit.JoinOr(u.fips, "none"))
	var rows [][]string
	for _, i := range o.Spec.Interfaces {
		s, ok := u.subnets[i.Subnet]
		if !ok {
			rows = append(rows, []string{i.Subnet, "", "", ""})
			continue
		}
		rows = append(rows, []string{i.Subnet, s.Spec.Network, s.Spec.CIDR, gatewayText(s.Status.Gateway)})
	}
	d.Table("Interfaces", []string{"SUBNET", "NETWORK", "CIDR", "GATEWAY"}, rows, "none (ultracloud router add-interface "+o.Name()+" SUBNET)")
}
