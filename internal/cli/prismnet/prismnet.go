// Package prismnet holds the CLI verbs of prismnet, tenant networks:
// `ultracloud network|subnet|port|secgroup|router|fip|extnet ...`, which
// the command tree adds at the top level. Each verb reads or writes the
// kinds of pkg/api/prismnetv1 through the generic SDK; changes to an
// existing object are read-modify-writes conditional on the revision read,
// so a concurrent change is a conflict, never a lost update.
//
// Like every component's CLI package it talks to the API only through pkg/
// and internal/cli/clikit; it never imports internal/prismnet. What the
// server validates (CIDRs inside networks, free addresses, immutability)
// stays the server's: the flags here only check their own syntax, so a
// typo is named before anything is sent.
package prismnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// NewCmds returns prismnet's top-level commands.
func NewCmds(cf *clikit.ClientFlags) []*cobra.Command {
	return []*cobra.Command{
		newNetworkCmd(cf), newSubnetCmd(cf), newPortCmd(cf), newSecGroupCmd(cf),
		newRouterCmd(cf), newFIPCmd(cf), newExtNetCmd(cf),
	}
}

// unserved ends the error of an endpoint without one of prismnet's kinds.
const unserved = " yet: its prismnet control plane predates them or is not running (see `ultracloud status`)"

// prismnet's collections as the verbs address them.
var (
	networks  = clikit.Kind{Kind: prismnetv1.NetworkKind, Collection: prismnetv1.NetworkCollection, Singular: "network", Unserved: unserved}
	subnets   = clikit.Kind{Kind: prismnetv1.SubnetKind, Collection: prismnetv1.SubnetCollection, Singular: "subnet", Unserved: unserved}
	ports     = clikit.Kind{Kind: prismnetv1.PortKind, Collection: prismnetv1.PortCollection, Singular: "port", Unserved: unserved}
	secgroups = clikit.Kind{Kind: prismnetv1.SecurityGroupKind, Collection: prismnetv1.SecurityGroupCollection, Singular: "securitygroup", Unserved: unserved}
	routers   = clikit.Kind{Kind: prismnetv1.RouterKind, Collection: prismnetv1.RouterCollection, Singular: "router", Unserved: unserved}
	fips      = clikit.Kind{Kind: prismnetv1.FloatingIPKind, Collection: prismnetv1.FloatingIPCollection, Singular: "floatingip", Unserved: unserved}
	extnets   = clikit.Kind{Kind: prismnetv1.ExternalNetworkKind, Collection: prismnetv1.ExternalNetworkCollection, Singular: "externalnetwork", Cluster: true, Unserved: unserved}
	hosts     = clikit.Kind{Kind: prismnetv1.HostKind, Collection: prismnetv1.HostCollection, Singular: "networkhost", Cluster: true, Unserved: unserved}
)

// errNoChange makes update write nothing and report success.
var errNoChange = errors.New("prismnet: nothing to change")

// update reads name, applies change to its spec and writes it back,
// conditional on the revision read. When someone else changed the object in
// between: with retry (a change that does not depend on what was read,
// such as setting a field) it reads and applies again; without, it fails
// with a conflict that says so and changes nothing. change returning
// errNoChange leaves the object as it is. Fields of the stored spec this
// CLI does not know are kept.
func update[S any](ctx context.Context, c *clikit.Conn, k clikit.Kind, name string, retry bool, change func(*S) error) (*api.Object, error) {
	rs, err := k.Handle(ctx, c, false)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		o, err := rs.Get(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.Ref(name), err)
		}
		spec, err := patchSpec(o.Spec, change)
		if errors.Is(err, errNoChange) {
			return o, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.Ref(name), err)
		}
		o.Spec = spec
		out, err := rs.Update(ctx, o) // o.Metadata.Revision is the one read
		if client.IsConflict(err) && retry && attempt < 5 {
			continue
		}
		if client.IsConflict(err) {
			return nil, fmt.Errorf("%s changed while this command ran (revision %d is no longer current); nothing was changed: look at it again and retry: %w",
				k.Ref(name), o.Metadata.Revision, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.Ref(name), err)
		}
		return out, nil
	}
}

// patchSpec applies change to the spec in raw and returns the new raw
// spec: the top-level fields S knows are rewritten from the changed value,
// the others are kept as stored (a newer server's fields survive an older
// CLI's update).
func patchSpec[S any](raw json.RawMessage, change func(*S) error) (json.RawMessage, error) {
	var s S
	fields := map[string]json.RawMessage{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("decoding the spec: %w", err)
		}
		if err := json.Unmarshal(raw, &fields); err != nil {
			return nil, fmt.Errorf("decoding the spec: %w", err)
		}
	}
	before, err := fieldsOf(s)
	if err != nil {
		return nil, err
	}
	if err := change(&s); err != nil {
		return nil, err
	}
	after, err := fieldsOf(s)
	if err != nil {
		return nil, err
	}
	for f := range before {
		if _, ok := after[f]; !ok {
			delete(fields, f)
		}
	}
	for f, v := range after {
		fields[f] = v
	}
	return json.Marshal(fields)
}

func fieldsOf(v any) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]json.RawMessage{}
	return m, json.Unmarshal(b, &m)
}

// updatedRun is the RunE body of a verb that changes one object: it prints
// "<kind>/<name> <what()>" (what is asked after the call), or the object
// with -o json|yaml.
func updatedRun(cmd *cobra.Command, cf *clikit.ClientFlags, out string, k clikit.Kind, name string, what func() string, call func(ctx context.Context, c *clikit.Conn) (*api.Object, error)) error {
	return clikit.Run(cmd, cf, out, call, func(w io.Writer, f clikit.Format, o *api.Object) error {
		if f != clikit.FormatTable {
			return clikit.PrintData(w, f, o)
		}
		_, err := fmt.Fprintf(w, "%s %s\n", k.Ref(name), what())
		return err
	})
}
