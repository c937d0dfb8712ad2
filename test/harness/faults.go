//go:build linux

package harness

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// ErrNoNetem is returned by Latency on a kernel without the netem qdisc.
var ErrNoNetem = errors.New("harness: latency needs the sch_netem qdisc, which this kernel lacks")

// nftTable is the table the harness owns inside each host namespace.
const nftTable = "uch_harness"

// dropMode is how packets from one host to another are dropped.
type dropMode int

const (
	// dropAll drops every packet from -> to: one half of a symmetric
	// partition.
	dropAll dropMode = iota + 1
	// dropInitiated drops packets from -> to unless they belong to a
	// connection that `to` opened: from cannot reach to, to still reaches
	// from.
	dropInitiated
)

// faults is the desired network-fault state of a cluster. Every change
// rewrites each affected host's table from it, so the kernel always holds
// exactly what this says.
type faults struct {
	drops   map[[2]string]dropMode // (from, to) host names
	loss    map[string]int         // host -> percent
	latency map[string]time.Duration
}

func newFaults() *faults {
	return &faults{drops: map[[2]string]dropMode{}, loss: map[string]int{}, latency: map[string]time.Duration{}}
}

// renderRuleset returns the nft script that replaces host's table. addrs
// maps host names to all their addresses. The script creates the table,
// deletes it and defines it again, so it applies atomically whether or not
// the table existed.
func (f *faults) renderRuleset(host string, addrs map[string][]netip.Addr) string {
	var in, out []string
	names := make([]string, 0, len(addrs))
	for n := range addrs {
		names = append(names, n)
	}
	slices.Sort(names)
	set := func(peer string) string {
		var s []string
		for _, a := range addrs[peer] {
			s = append(s, a.String())
		}
		return "{ " + strings.Join(s, ", ") + " }"
	}
	for _, peer := range names {
		if peer == host {
			continue
		}
		switch f.drops[[2]string{host, peer}] {
		case dropAll:
			out = append(out, fmt.Sprintf("ip daddr %s drop comment \"partition %s -> %s\"", set(peer), host, peer))
		case dropInitiated:
			out = append(out, fmt.Sprintf("ip daddr %s ct direction original drop comment \"one-way %s -> %s\"", set(peer), host, peer))
		}
		if f.drops[[2]string{peer, host}] == dropAll {
			in = append(in, fmt.Sprintf("ip saddr %s drop comment \"partition %s -> %s\"", set(peer), peer, host))
		}
	}
	if p := f.loss[host]; p > 0 {
		// numgen's range is 0-99, so "< 100" is not valid: 100% is a plain drop.
		rule := "drop comment \"loss 100%\""
		if p < 100 {
			rule = fmt.Sprintf("numgen random mod 100 < %d drop comment \"loss %d%%\"", p, p)
		}
		in = append(in, rule)
		out = append(out, rule)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", nftTable, nftTable)
	fmt.Fprintf(&b, "table inet %s {\n", nftTable)
	chain := func(name, hook, lo string, rules []string) {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority filter; policy accept;\n", name, hook)
		fmt.Fprintf(&b, "\t\t%s \"lo\" accept\n", lo)
		for _, r := range rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	chain("input", "input", "iifname", in)
	chain("output", "output", "oifname", out)
	b.WriteString("}\n")
	return b.String()
}

// applyFaults writes the tables of the named hosts (all if none named).
func (c *Cluster) applyFaults(ctx context.Context, hosts ...*Host) error {
	if len(hosts) == 0 {
		hosts = c.hosts
	}
	addrs := map[string][]netip.Addr{}
	for _, h := range c.hosts {
		addrs[h.name] = h.allAddrs()
	}
	var errs []error
	for _, h := range hosts {
		script := c.faults.renderRuleset(h.name, addrs)
		if _, err := inNS(ctx, h.ns, script, "nft", "-f", "-"); err != nil {
			errs = append(errs, fmt.Errorf("harness: %s: applying nftables rules: %w", h.name, err))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) checkHosts(groups ...[]*Host) error {
	for _, g := range groups {
		if len(g) == 0 {
			return errors.New("harness: empty host group")
		}
		for _, h := range g {
			if h == nil || h.c != c {
				return errors.New("harness: host is not part of this cluster")
			}
		}
	}
	return nil
}

// Partition cuts every host in a off from every host in b, in both
// directions: packets between them are dropped in both hosts' namespaces,
// including those of connections that already exist. Hosts in the same
// group, and the switch namespace, still reach everyone. Partitions add up
// until Heal.
func (c *Cluster) Partition(a, b []*Host) error {
	return c.setDrops(a, b, dropAll, true)
}

// PartitionOneWay stops hosts in from reaching hosts in to, while to can
// still reach from. It works per connection, which is what "A cannot reach
// B" means for TCP: packets from a host in from to a host in to are dropped
// unless they belong to a connection the host in to opened (its replies get
// through). Connections from opened earlier stop working. A purely
// packet-level one-way drop would break TCP both ways, since every
// handshake needs both directions.
func (c *Cluster) PartitionOneWay(from, to []*Host) error {
	return c.setDrops(from, to, dropInitiated, false)
}

func (c *Cluster) setDrops(a, b []*Host, mode dropMode, symmetric bool) error {
	if err := c.checkHosts(a, b); err != nil {
		return err
	}
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return fmt.Errorf("harness: %s is on both sides of the partition", x.name)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var touched []*Host
	for _, x := range a {
		for _, y := range b {
			if cur := c.faults.drops[[2]string{x.name, y.name}]; cur != dropAll {
				c.faults.drops[[2]string{x.name, y.name}] = mode
			}
			if symmetric {
				c.faults.drops[[2]string{y.name, x.name}] = mode
			}
		}
	}
	touched = append(append(touched, a...), b...)
	return c.applyFaults(context.Background(), touched...)
}

// Heal removes every network fault: partitions, loss and latency.
func (c *Cluster) Heal() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for name := range c.faults.latency {
		if err := c.setLatencyLocked(c.byName[name], 0); err != nil {
			errs = append(errs, err)
		}
	}
	c.faults.drops = map[[2]string]dropMode{}
	c.faults.loss = map[string]int{}
	errs = append(errs, c.applyFaults(context.Background()))
	return errors.Join(errs...)
}

// Loss drops percent% of the packets entering or leaving h (on any
// interface but loopback), chosen at random by nftables (`numgen random mod
// 100 < N drop`). 0 removes the loss; 100 cuts h off entirely.
func (c *Cluster) Loss(h *Host, percent int) error {
	if err := c.checkHosts([]*Host{h}); err != nil {
		return err
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("harness: loss %d%%: want 0-100", percent)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if percent == 0 {
		delete(c.faults.loss, h.name)
	} else {
		c.faults.loss[h.name] = percent
	}
	return c.applyFaults(context.Background(), h)
}

// Latency delays every packet leaving h's interfaces by d, with a netem
// qdisc; 0 removes it. On a kernel without sch_netem it returns an error
// wrapping ErrNoNetem, found by asking the kernel (tc's "qdisc kind is
// unknown"), not assumed.
func (c *Cluster) Latency(h *Host, d time.Duration) error {
	if err := c.checkHosts([]*Host{h}); err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("harness: latency %s: must not be negative", d)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setLatencyLocked(h, d)
}

func (c *Cluster) setLatencyLocked(h *Host, d time.Duration) error {
	ctx := context.Background()
	var errs []error
	for _, ifc := range h.interfaces() {
		if d == 0 {
			_, err := inNS(ctx, h.ns, "", "tc", "qdisc", "del", "dev", ifc, "root")
			// Deleting a qdisc that is not there is fine.
			if err != nil && !strings.Contains(cmdOutput(err), "No such file") &&
				!strings.Contains(cmdOutput(err), "Cannot delete qdisc with handle of zero") {
				errs = append(errs, fmt.Errorf("harness: %s: removing latency: %w", h.name, err))
			}
			continue
		}
		us := fmt.Sprintf("%dus", d.Microseconds())
		_, err := inNS(ctx, h.ns, "", "tc", "qdisc", "replace", "dev", ifc, "root", "netem", "delay", us)
		if err != nil {
			// tc's only report of a missing qdisc kind is this message.
			if strings.Contains(cmdOutput(err), "qdisc kind is unknown") {
				return fmt.Errorf("%w (host %s: tc: %s)", ErrNoNetem, h.name, cmdOutput(err))
			}
			return fmt.Errorf("harness: %s: adding latency: %w", h.name, err)
		}
	}
	if d == 0 {
		delete(c.faults.latency, h.name)
	} else {
		c.faults.latency[h.name] = d
	}
	return errors.Join(errs...)
}

// describeFaults lists the active faults, for failure reports.
func (f *faults) describe() string {
	var parts []string
	keys := make([][2]string, 0, len(f.drops))
	for k := range f.drops {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[0]+"\x00"+a[1], b[0]+"\x00"+b[1]) })
	for _, k := range keys {
		kind := "drop"
		if f.drops[k] == dropInitiated {
			kind = "one-way"
		}
		parts = append(parts, fmt.Sprintf("%s %s->%s", kind, k[0], k[1]))
	}
	for _, h := range sortedKeys(f.loss) {
		parts = append(parts, fmt.Sprintf("loss %s %d%%", h, f.loss[h]))
	}
	for _, h := range sortedKeys(f.latency) {
		parts = append(parts, fmt.Sprintf("latency %s %s", h, f.latency[h]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
