package prismnet

import (
	"context"
	"errors"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

type fip = clikit.Object[prismnetv1.FloatingIPSpec, prismnetv1.FloatingIPStatus]

var fipCols = []clikit.Column[prismnetv1.FloatingIPSpec, prismnetv1.FloatingIPStatus]{
	{Head: "EXTERNAL-NETWORK", Value: func(o fip) string { return o.Spec.ExternalNetwork }},
	{Head: "ADDRESS", Value: func(o fip) string { return o.Status.Address }},
	{Head: "PORT", Value: func(o fip) string { return o.Spec.Port }},
	{Head: "INTERNAL-IP", Value: func(o fip) string { return o.Status.InternalIP }},
	{Head: "ROUTER", Value: func(o fip) string { return o.Status.Router }},
}

func newFIPCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "fip",
		Aliases: []string{"fips", "floatingip", "floatingips"},
		Short:   "Floating IPs: external addresses that reach a port by DNAT",
		Long: `A floating IP is an address of an external network that reaches one port
(one of its IPv4 addresses) through a router: the port's network must be
attached to a router whose gateway is on the same external network.`,
	}
	var ext, portName, fixed, out string
	create := &cobra.Command{
		Use:     "create NAME --external-network EXTNET [--port PORT [--fixed-ip ADDR]]",
		Short:   "Allocate a floating IP, optionally associated with a port",
		Example: `  ultracloud fip create web-public --external-network uplink --port web-1`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.KindCreateRun(cmd, cf, out, fips, args[0], func() (any, error) {
				if ext == "" {
					return nil, errors.New("--external-network is required: the external network the address comes from")
				}
				spec := prismnetv1.FloatingIPSpec{ExternalNetwork: ext, Port: portName}
				if fixed != "" {
					if portName == "" {
						return nil, errors.New("--fixed-ip picks an address of --port; give --port too")
					}
					a, err := parseAddr("--fixed-ip", fixed)
					if err != nil {
						return nil, err
					}
					spec.FixedIP = a.String()
				}
				return spec, nil
			})
		},
	}
	create.Flags().StringVar(&ext, "external-network", "", "external network the address comes from")
	create.Flags().StringVar(&portName, "port", "", "port to associate")
	create.Flags().StringVar(&fixed, "fixed-ip", "", "which IPv4 address of the port (default: its first)")
	clikit.OutputFlag(create, &out)

	var afixed, aout string
	assoc := &cobra.Command{
		Use:   "associate NAME PORT [--fixed-ip ADDR]",
		Short: "Point a floating IP at a port (replacing its current port, if any)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var fixedIP string
			if afixed != "" {
				a, err := parseAddr("--fixed-ip", afixed)
				if err != nil {
					return err
				}
				fixedIP = a.String()
			}
			return updatedRun(cmd, cf, aout, fips, args[0], func() string { return "associated with port " + args[1] },
				func(ctx context.Context, c *clikit.Conn) (*api.Object, error) {
					return update(ctx, c, fips, args[0], true, func(s *prismnetv1.FloatingIPSpec) error {
						s.Port, s.FixedIP = args[1], fixedIP
						return nil
					})
				})
		},
	}
	assoc.Flags().StringVar(&afixed, "fixed-ip", "", "which IPv4 address of the port (default: its first)")
	clikit.OutputFlag(assoc, &aout)

	var dout string
	disassoc := &cobra.Command{
		Use:   "disassociate NAME",
		Short: "Detach a floating IP from its port (the address stays allocated)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "disassociated"
			return updatedRun(cmd, cf, dout, fips, args[0], func() string { return what },
				func(ctx context.Context, c *clikit.Conn) (*api.Object, error) {
					return update(ctx, c, fips, args[0], true, func(s *prismnetv1.FloatingIPSpec) error {
						if s.Port == "" {
							what = "is not associated; nothing changed"
							return errNoChange
						}
						s.Port, s.FixedIP = "", ""
						return nil
					})
				})
		},
	}
	clikit.OutputFlag(disassoc, &dout)

	cmd.AddCommand(create, assoc, disassoc, clikit.KindListCmd(cf, fips, "floating IPs", fipCols, nil), clikit.KindGetCmd(cf, fips, fipCols),
		clikit.KindDescribeCmd(cf, fips, nil, describeFIP), clikit.KindDeleteCmd(cf, fips))
	return cmd
}

func describeFIP(d *clikit.Desc, o fip, _ struct{}) {
	d.KV("External network", o.Spec.ExternalNetwork)
	d.KV("Address", o.Status.Address)
	if o.Spec.Port == "" {
		d.KV("Port", "none (ultracloud fip associate "+o.Name()+" PORT)")
		return
	}
	d.KV("Port", o.Spec.Port)
	if o.Spec.FixedIP != "" {
		d.KV("Requested address", o.Spec.FixedIP)
	}
	d.KV("Internal address", o.Status.InternalIP)
	d.KV("Router", o.Status.Router)
}
