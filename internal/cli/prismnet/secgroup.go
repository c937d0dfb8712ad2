package prismnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

type secgroup = clikit.Object[prismnetv1.SecurityGroupSpec, prismnetv1.SecurityGroupStatus]

var secgroupCols = []clikit.Column[prismnetv1.SecurityGroupSpec, prismnetv1.SecurityGroupStatus]{
	{Head: "RULES", Value: func(o secgroup) string { return strconv.Itoa(len(o.Spec.Rules)) }},
	{Head: "DESCRIPTION", Value: func(o secgroup) string { return o.Spec.Description }},
}

func newSecGroupCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "secgroup",
		Aliases: []string{"secgroups", "securitygroup", "securitygroups", "sg"},
		Short:   "Security groups: stateful allow rules applied to ports",
		Long: `A security group is a list of allow rules. A port with port security denies
ingress and allows egress by default, admits traffic from ports that share
one of its groups, and its groups' rules add what else is allowed. Replies to
allowed traffic always pass (the filter is stateful).`,
	}
	var desc, out string
	create := &cobra.Command{
		Use:   "create NAME [--description TEXT]",
		Short: "Create a security group without rules (add them with `secgroup rule add`)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.KindCreateRun(cmd, cf, out, secgroups, args[0], func() (any, error) {
				return prismnetv1.SecurityGroupSpec{Description: desc}, nil
			})
		},
	}
	create.Flags().StringVar(&desc, "description", "", "what the group is for")
	clikit.OutputFlag(create, &out)
	cmd.AddCommand(create, clikit.KindListCmd(cf, secgroups, "security groups", secgroupCols, nil), clikit.KindGetCmd(cf, secgroups, secgroupCols),
		clikit.KindDescribeCmd(cf, secgroups, secgroupUsers, describeSecGroup), newRuleCmd(cf), clikit.KindDeleteCmd(cf, secgroups))
	return cmd
}

// groupUsers are the ports that use a group, or why they could not be
// read.
type groupUsers struct {
	ports []string
	err   error
}

func secgroupUsers(ctx context.Context, c *clikit.Conn, o secgroup) groupUsers {
	ps, err := clikit.ListWhere(ctx, c, ports, false, func(p port) bool { return slices.Contains(p.Spec.SecurityGroups, o.Name()) })
	return groupUsers{ports: clikit.Names(ps), err: err}
}

func describeSecGroup(d *clikit.Desc, o secgroup, u groupUsers) {
	d.KV("Description", o.Spec.Description)
	if u.err != nil {
		d.KV("Used by ports", "cannot be read: "+u.err.Error())
	} else {
		d.KV("Used by ports", clikit.JoinOr(u.ports, "none"))
	}
	var rows [][]string
	for i, r := range o.Spec.Rules {
		rows = append(rows, append([]string{strconv.Itoa(i)}, ruleCells(r)...))
	}
	d.Table("Rules", []string{"INDEX", "DIRECTION", "ETHERTYPE", "PROTOCOL", "PORTS", "REMOTE"}, rows,
		"none (members admit each other; other ingress is denied, egress allowed)")
}

// ruleCells renders a rule for people.
func ruleCells(r prismnetv1.SecurityGroupRule) []string {
	proto := r.Protocol
	if proto == "" {
		proto = "any"
	}
	portRange := "any"
	switch {
	case r.PortMin != 0 && (r.PortMax == 0 || r.PortMax == r.PortMin):
		portRange = strconv.Itoa(r.PortMin)
	case r.PortMin != 0:
		portRange = fmt.Sprintf("%d-%d", r.PortMin, r.PortMax)
	}
	remote := "anyone"
	switch {
	case r.RemoteCIDR != "":
		remote = r.RemoteCIDR
	case r.RemoteGroup != "":
		remote = "group " + r.RemoteGroup
	}
	eth := r.Ethertype
	if eth == "" {
		eth = "IPv4"
	}
	return []string{r.Direction, eth, proto, portRange, remote}
}

func newRuleCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "rule", Aliases: []string{"rules"}, Short: "Add and delete a security group's rules"}
	var dir, eth, proto, portRange, rcidr, rgroup, out string
	add := &cobra.Command{
		Use:   "add GROUP --direction ingress|egress [--ethertype IPv4|IPv6] [--protocol tcp|udp|icmp|icmpv6|N] [--port PORT|MIN-MAX] [--remote-cidr CIDR | --remote-group GROUP]",
		Short: "Allow one kind of traffic",
		Example: `  ultracloud secgroup rule add web --direction ingress --protocol tcp --port 443
  ultracloud secgroup rule add web --direction ingress --protocol tcp --port 8000-8080 --remote-cidr 10.0.0.0/16
  ultracloud secgroup rule add db --direction ingress --protocol tcp --port 5432 --remote-group web
  ultracloud secgroup rule add web --direction ingress --protocol icmpv6 --ethertype IPv6`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := clikit.ParseOutput(out); err != nil {
				return err
			}
			r, err := ruleOf(dir, eth, proto, portRange, rcidr, rgroup)
			if err != nil {
				return err
			}
			what := "rule added"
			return updatedRun(cmd, cf, out, secgroups, args[0], func() string { return what }, func(ctx context.Context, c *clikit.Conn) (*api.Object, error) {
				// Appending does not depend on what was read: a conflict
				// reads again and appends again.
				return update(ctx, c, secgroups, args[0], true, func(s *prismnetv1.SecurityGroupSpec) error {
					if i := slices.Index(s.Rules, r); i >= 0 {
						what = fmt.Sprintf("already has this rule (index %d); nothing changed", i)
						return errNoChange
					}
					s.Rules = append(s.Rules, r)
					what = fmt.Sprintf("rule %d added", len(s.Rules)-1)
					return nil
				})
			})
		},
	}
	f := add.Flags()
	f.StringVar(&dir, "direction", "", "ingress (to the port) or egress (from it); required")
	f.StringVar(&eth, "ethertype", "", "IPv4 or IPv6 (default IPv4, or IPv6 for an IPv6 --remote-cidr or icmpv6)")
	f.StringVar(&proto, "protocol", "", "tcp, udp, icmp, icmpv6, an IP protocol number, or any (default any)")
	f.StringVar(&portRange, "port", "", "destination port or MIN-MAX range, tcp and udp only (default all)")
	f.StringVar(&rcidr, "remote-cidr", "", "admit only this source (ingress) or destination (egress) prefix")
	f.StringVar(&rgroup, "remote-group", "", "admit only the ports of this security group")
	clikit.OutputFlag(add, &out)

	var rev int64
	var dout string
	del := &cobra.Command{
		Use:   "delete GROUP INDEX [--revision N]",
		Short: "Delete the rule at INDEX (as `secgroup describe` numbers them)",
		Long: `delete removes one rule by its index in the group's rule list. The group is
rewritten only if nobody changed it since it was read, so a concurrent change
is a clear conflict, never a lost update. With --revision (the Revision that
` + "`secgroup describe`" + ` showed) it deletes only if the group is still as shown.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := clikit.ParseOutput(dout); err != nil {
				return err
			}
			idx, err := strconv.Atoi(args[1])
			if err != nil || idx < 0 {
				return fmt.Errorf("INDEX %q: want the rule's number as `ultracloud secgroup describe %s` shows it (0, 1, ...)", args[1], args[0])
			}
			var removed prismnetv1.SecurityGroupRule
			what := func() string {
				c := ruleCells(removed)
				return fmt.Sprintf("rule %d deleted (%s %s %s port %s, remote %s)", idx, c[0], c[1], c[2], c[3], c[4])
			}
			return updatedRun(cmd, cf, dout, secgroups, args[0], what, func(ctx context.Context, c *clikit.Conn) (*api.Object, error) {
				rs, err := secgroups.Handle(ctx, c, false)
				if err != nil {
					return nil, err
				}
				if rev > 0 {
					cur, err := rs.Get(ctx, args[0])
					if err != nil {
						return nil, fmt.Errorf("%s: %w", secgroups.Ref(args[0]), err)
					}
					if cur.Metadata.Revision != rev {
						return nil, fmt.Errorf("%s is at revision %d, not %d: it changed since you looked; nothing was deleted (ultracloud secgroup describe %s)",
							secgroups.Ref(args[0]), cur.Metadata.Revision, rev, args[0])
					}
				}
				return update(ctx, c, secgroups, args[0], false, func(s *prismnetv1.SecurityGroupSpec) error {
					if idx >= len(s.Rules) {
						return fmt.Errorf("has %d rules; there is no rule %d (ultracloud secgroup describe %s)", len(s.Rules), idx, args[0])
					}
					removed = s.Rules[idx]
					s.Rules = slices.Delete(s.Rules, idx, idx+1)
					return nil
				})
			})
		},
	}
	del.Flags().Int64Var(&rev, "revision", 0, "delete only if the group is still at this revision")
	clikit.OutputFlag(del, &dout)
	cmd.AddCommand(add, del)
	return cmd
}

// ruleOf builds a rule from the flags of `rule add`.
func ruleOf(dir, eth, proto, portRange, rcidr, rgroup string) (prismnetv1.SecurityGroupRule, error) {
	var r prismnetv1.SecurityGroupRule
	var err error
	if r.Direction, err = parseDirection("--direction", dir); err != nil {
		return r, err
	}
	if r.Ethertype, err = parseEthertype("--ethertype", eth); err != nil {
		return r, err
	}
	if r.Protocol, err = parseProtocol("--protocol", proto); err != nil {
		return r, err
	}
	if r.PortMin, r.PortMax, err = parsePortRange("--port", portRange); err != nil {
		return r, err
	}
	if r.PortMin != 0 && r.Protocol != "tcp" && r.Protocol != "udp" {
		return r, errors.New("--port needs --protocol tcp or udp (ports are theirs)")
	}
	if rcidr != "" && rgroup != "" {
		return r, errors.New("give --remote-cidr or --remote-group, not both")
	}
	r.RemoteGroup = rgroup
	if rcidr != "" {
		p, err := netip.ParsePrefix(rcidr)
		if err != nil {
			return r, fmt.Errorf("--remote-cidr: %q is not a CIDR prefix such as 10.0.0.0/16 or ::/0", rcidr)
		}
		r.RemoteCIDR = p.String()
		if r.Ethertype == "" && p.Addr().Is6() {
			r.Ethertype = "IPv6"
		}
	}
	if r.Ethertype == "" && r.Protocol == "icmpv6" {
		r.Ethertype = "IPv6"
	}
	if r.Ethertype == "" {
		r.Ethertype = "IPv4"
	}
	return r, nil
}
