//go:build linux

package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	mnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ultracloud/ultracloud/internal/prismnet/netns"
)

// ErrPartial is returned (wrapped, with a count) by Apply when some part
// of the State could not be applied; the Report says which.
var ErrPartial = errors.New("dataplane: state partly applied")

// Host converges the kernel of one host (a network namespace: the host's
// root namespace in production, a test namespace in tests) to a State.
// Its methods may be called from any goroutine; Applies are serialized.
type Host struct {
	opts Options
	log  *slog.Logger
	ns   vnetns.NsHandle
	nl   *netlink.Handle
	nft  *nftables.Conn

	mu        sync.Mutex
	closed    bool
	fw        *fwCurrent         // nil: read from the kernel on the next Apply
	pols      map[string]*fwPort // last applied firewall per port, for closing connections
	groups    map[string]map[netip.Addr]bool
	nfCallSet map[string]bool // bridges whose nf_call_iptables this Host wrote

	// Records of what the last successful Apply left, trusted instead of a
	// kernel dump until ResyncInterval has passed since the last full scan
	// (a dump of 1,000 links or 3,000 neighbour entries costs ~20-30 ms,
	// most of a single-port change's budget).
	links    map[string]netlink.Link
	remotes  map[string]*remoteSet // by network
	lastScan time.Time
}

// remoteSet is what ensureRemotes last put on a network's VXLAN device.
type remoteSet struct {
	fdb   map[string]netip.Addr
	neigh map[netip.Addr]string
}

// New opens the namespace and the kernel interfaces. It changes nothing:
// the first Apply adopts what an earlier run left.
func New(opts Options) (*Host, error) {
	if opts.NamespaceDir == "" {
		opts.NamespaceDir = "/run/netns"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ResyncInterval == 0 {
		opts.ResyncInterval = 30 * time.Second
	}
	ns, err := netns.Open(opts.Netns)
	if err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("dataplane: netlink: %w", err)
	}
	nc, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting(), nftables.WithSockOptions(bigBuffers))
	if err != nil {
		nh.Close()
		ns.Close()
		return nil, fmt.Errorf("dataplane: nftables: %w", err)
	}
	return &Host{opts: opts, log: opts.Logger.With("component", "prismnet-dataplane"), ns: ns, nl: nh, nft: nc,
		pols: map[string]*fwPort{}, nfCallSet: map[string]bool{}}, nil
}

// bigBuffers lets one nftables transaction carry a whole 1,000-port
// firewall: the library sends a transaction in one sendmsg (EMSGSIZE
// beyond the socket's send buffer) and the kernel acknowledges every
// message of it. Forcing the sizes needs CAP_NET_ADMIN, which the agent
// has anyway.
func bigBuffers(c *mnetlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 64<<20),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20))
	}); err != nil {
		return err
	}
	return serr
}

// Close releases the Host's handles; the kernel state stays as it is.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	err := h.nft.CloseLasting()
	h.nl.Close()
	return errors.Join(err, h.ns.Close())
}

// ServiceNamespace returns the path of a network's service namespace
// (ucs-<id>), where the DHCP server, RA sender and metadata proxy open
// their sockets (with netns.Do). It exists once an Apply created it.
func (h *Host) ServiceNamespace(networkID string) (string, error) {
	p := h.nsPath(devName(kindService, networkID))
	ns, err := netns.Open(p)
	if err != nil {
		return "", fmt.Errorf("dataplane: service namespace of network %s: %w", networkID, err)
	}
	ns.Close()
	return p, nil
}

// RouterNamespace returns the path of a router's namespace (ucr-<id>).
func (h *Host) RouterNamespace(routerID string) string {
	return h.nsPath(devName(kindRouter, routerID))
}

// applier holds one Apply's working state.
type applier struct {
	h       *Host
	s       *State
	rep     *Report
	links   map[string]netlink.Link // ours, by name
	keep    map[string]bool         // device names the State wants
	keepNs  map[string]bool         // namespace names the State wants
	changes int
	closers []func()
	last    time.Time
	phases  []string // "phase=duration", for the debug log
}

func (a *applier) mark(phase string) {
	now := time.Now()
	if !a.last.IsZero() {
		a.phases = append(a.phases, phase+"="+now.Sub(a.last).Round(10*time.Microsecond).String())
	}
	a.last = now
}

func (a *applier) close() {
	for _, c := range a.closers {
		c()
	}
}

func (a *applier) fail(err error) {
	a.rep.Errors = append(a.rep.Errors, err)
	a.h.log.Warn("apply step failed", "err", err)
}

// Apply makes the kernel match s: it creates what is missing, changes
// what differs and removes what of ours s does not have. Unchanged objects
// are left alone (a second Apply of the same State reports 0 changes), so
// it can run while traffic flows. A failing port or network does not stop
// the others; Apply then returns ErrPartial and the Report says what
// failed.
func (h *Host) Apply(ctx context.Context, s State) (Report, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rep := Report{Ports: map[string]PortResult{}}
	if h.closed {
		return rep, ErrClosed
	}
	if err := s.validate(); err != nil {
		return rep, err
	}
	a := &applier{h: h, s: &s, rep: &rep, keep: map[string]bool{}, keepNs: map[string]bool{}, last: time.Now()}
	defer a.close()
	full := h.links == nil || time.Since(h.lastScan) >= h.opts.ResyncInterval
	if full {
		all, err := listLinks(h.nl)
		if err != nil {
			return rep, err
		}
		a.links = map[string]netlink.Link{}
		for _, l := range all {
			if _, _, ok := parseDevName(l.Attrs().Name); ok {
				a.links[l.Attrs().Name] = l
			}
		}
		h.remotes = map[string]*remoteSet{}
		h.lastScan = time.Now()
	} else {
		a.links = maps.Clone(h.links)
	}
	// Forget the records until this Apply succeeds: a failure rescans.
	h.links = nil

	a.mark("links")
	nets := map[string]*Network{}
	bridges := map[string]netlink.Link{}
	vxlans := map[string]netlink.Link{}
	for i := range s.Networks {
		n := &s.Networks[i]
		nets[n.ID] = n
		a.keep[devName(kindBridge, n.ID)] = true
		a.keep[devName(kindVxlan, n.ID)] = true
		a.keep[devName(kindService, n.ID)] = true
		a.keepNs[devName(kindService, n.ID)] = true
		br, vx, err := a.ensureNetwork(n, s.Underlay)
		if err != nil {
			a.fail(fmt.Errorf("network %s: %w", n.ID, err))
			continue
		}
		bridges[n.ID], vxlans[n.ID] = br, vx
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	a.mark("networks")
	extBridges := map[string]netlink.Link{}
	for _, e := range s.Externals {
		a.keep[devName(kindExternal, e.ID)] = true
		br, err := a.ensureExternal(&e)
		if err != nil {
			a.fail(fmt.Errorf("external network %s: %w", e.ID, err))
			continue
		}
		extBridges[e.ID] = br
	}

	ready, newDevs := a.ensurePorts(nets, bridges)
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	a.mark("ports")
	for id, vx := range vxlans {
		if err := a.ensureRemotes(id, vx); err != nil {
			a.fail(fmt.Errorf("network %s remotes: %w", id, err))
		}
	}
	a.mark("remotes")
	fwErr := a.applyFW(nets, ready)
	for _, p := range ready {
		if fwErr != nil && p.PortSecurity {
			rep.Ports[p.ID] = PortResult{Err: fwErr.Error()}
			continue
		}
		// New devices come up only now, with their filters in place, so a
		// workload never sends a frame unfiltered.
		if l := newDevs[p.ID]; l != nil {
			if err := a.setUp(h.nl, l); err != nil {
				rep.Ports[p.ID] = PortResult{Err: err.Error()}
				continue
			}
		}
		rep.Ports[p.ID] = PortResult{Ready: true}
	}
	if fwErr != nil {
		a.fail(fwErr)
	}
	a.mark("fw")
	for i := range s.Routers {
		r := &s.Routers[i]
		a.keepNs[devName(kindRouter, r.ID)] = true
		for _, ifc := range r.Interfaces {
			a.keep[legDev(r.ID, ifc.Network)] = true
		}
		if r.External != nil {
			a.keep[devName(kindGateway, r.ID)] = true
		}
		if err := a.ensureRouter(r, bridges, extBridges, nets); err != nil {
			a.fail(fmt.Errorf("router %s: %w", r.ID, err))
		}
	}
	a.mark("routers")
	a.gc()
	rep.Changes = a.changes
	a.mark("gc")
	h.log.Debug("applied", "changes", a.changes, "ports", len(s.Ports), "errors", len(rep.Errors), "phases", a.phases)
	notReady := 0
	for _, pr := range rep.Ports {
		if !pr.Ready {
			notReady++
		}
	}
	if len(rep.Errors) == 0 {
		h.links = a.links
	}
	if len(rep.Errors) > 0 || notReady > 0 {
		return rep, fmt.Errorf("%w: %d errors, %d ports not ready", ErrPartial, len(rep.Errors), notReady)
	}
	return rep, nil
}

// ensureNetwork: bridge, VXLAN device, service namespace.
func (a *applier) ensureNetwork(n *Network, underlay netip.Addr) (netlink.Link, netlink.Link, error) {
	br, err := a.ensureBridge(devName(kindBridge, n.ID), n.mtu(), true)
	if err != nil {
		return nil, nil, err
	}
	vx, err := a.ensureVxlan(n, br, underlay)
	if err != nil {
		return nil, nil, err
	}
	if err := a.ensureService(n, br); err != nil {
		return nil, nil, err
	}
	return br, vx, nil
}

// ensureService makes the service namespace ucs-<id>: a veth into the
// bridge whose inner end (eth0, ServiceMAC) holds every subnet's service
// address and 169.254.169.254/32.
func (a *applier) ensureService(n *Network, br netlink.Link) error {
	name := devName(kindService, n.ID)
	ns, err := a.ensureNamespace(name)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, func() { ns.Close() })
	addrs := []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32")}
	for _, sn := range n.Subnets {
		if sn.ServiceAddr.IsValid() {
			addrs = append(addrs, netip.PrefixFrom(sn.ServiceAddr, sn.CIDR.Bits()))
		}
	}
	_, ph, err := a.ensureVeth(vethSpec{host: name, master: br, mtu: n.mtu(), peerNs: ns, peerName: ServiceInterface,
		peerMAC: n.ServiceMAC, peerAddrs: addrs}, true)
	if err != nil {
		return err
	}
	return a.loUp(ph)
}

func (a *applier) ensureExternal(e *ExternalNetwork) (netlink.Link, error) {
	br, err := a.ensureBridge(devName(kindExternal, e.ID), 0, false)
	if err != nil {
		return nil, err
	}
	up, err := a.h.nl.LinkByName(e.Interface)
	if err != nil {
		return nil, fmt.Errorf("dataplane: interface %s: %w", e.Interface, err)
	}
	if err := a.setMaster(a.h.nl, up, br); err != nil {
		return nil, err
	}
	return br, a.setUp(a.h.nl, up)
}

// ensurePorts makes every port's device. It returns the ports whose
// device is in place, and the devices it created (still down).
func (a *applier) ensurePorts(nets map[string]*Network, bridges map[string]netlink.Link) ([]*Port, map[string]netlink.Link) {
	h := a.h
	var ready []*Port
	newDevs := map[string]netlink.Link{}
	seen := map[string]bool{}
	var taps []*Port
	for i := range a.s.Ports {
		p := &a.s.Ports[i]
		if seen[p.ID] {
			a.rep.Ports[p.ID] = PortResult{Err: invalid("port %s: duplicate id", p.ID).Error()}
			continue
		}
		seen[p.ID] = true
		dev := portDev(p)
		a.keep[dev] = true
		if err := validatePort(p, nets); err != nil {
			a.rep.Ports[p.ID] = PortResult{Err: err.Error()}
			continue
		}
		br := bridges[p.Network]
		if br == nil {
			a.rep.Ports[p.ID] = PortResult{Err: fmt.Sprintf("network %s is not in place", p.Network)}
			continue
		}
		n := nets[p.Network]
		if p.Device == Tap {
			l := a.links[dev]
			if l != nil && (l.Type() != "tuntap" || l.Attrs().Alias != portAlias(p.ID)) {
				if err := a.delLink(l); err != nil {
					a.rep.Ports[p.ID] = PortResult{Err: err.Error()}
					continue
				}
				l = nil
			}
			if l == nil {
				taps = append(taps, p)
				continue
			}
			if err := a.finishPortLink(p, l, br, n.mtu()); err != nil {
				a.rep.Ports[p.ID] = PortResult{Err: err.Error()}
				continue
			}
			ready = append(ready, p)
			continue
		}
		l, err := a.ensurePortVeth(p, br, n.mtu())
		if err != nil {
			a.rep.Ports[p.ID] = PortResult{Err: err.Error()}
			continue
		}
		if !isUp(l) {
			newDevs[p.ID] = l
		}
		ready = append(ready, p)
	}
	if len(taps) > 0 {
		names := make([]string, len(taps))
		for i, p := range taps {
			names[i] = portDev(p)
		}
		errs := h.createTaps(names)
		for _, p := range taps {
			dev := portDev(p)
			if err := errs[dev]; err != nil {
				a.rep.Ports[p.ID] = PortResult{Err: err.Error()}
				continue
			}
			a.changes++
			l, err := h.nl.LinkByName(dev)
			if err == nil {
				err = h.nl.LinkSetAlias(l, portAlias(p.ID))
				l.Attrs().Alias = portAlias(p.ID)
			}
			if err == nil {
				err = a.finishPortLink(p, l, bridges[p.Network], nets[p.Network].mtu())
			}
			if err != nil {
				a.rep.Ports[p.ID] = PortResult{Err: fmt.Sprintf("tap %s: %v", dev, err)}
				continue
			}
			a.links[dev] = l
			newDevs[p.ID] = l
			ready = append(ready, p)
		}
	}
	return ready, newDevs
}

// finishPortLink sets an existing tap's MTU and master.
func (a *applier) finishPortLink(p *Port, l netlink.Link, br netlink.Link, mtu int) error {
	if err := a.setMTU(a.h.nl, l, mtu); err != nil {
		return err
	}
	return a.setMaster(a.h.nl, l, br)
}

func (a *applier) ensurePortVeth(p *Port, br netlink.Link, mtu int) (netlink.Link, error) {
	dev := portDev(p)
	l := a.links[dev]
	checkPeer := false
	if l == nil || l.Attrs().Alias != portAlias(p.ID) {
		checkPeer = true
	}
	var peerNs vnetns.NsHandle = vnetns.None()
	if checkPeer {
		ns, err := netns.Open(p.PeerNamespace)
		if err != nil {
			return nil, fmt.Errorf("port %s: peer namespace: %w", p.ID, err)
		}
		a.closers = append(a.closers, func() { ns.Close() })
		peerNs = ns
	}
	peer := p.PeerName
	if peer == "" {
		peer = "eth0"
	}
	// The host end stays down until the port's filters exist.
	l, _, err := a.ensureVeth(vethSpec{host: dev, hostAlias: portAlias(p.ID), master: br, mtu: mtu,
		peerNs: peerNs, peerName: peer, peerMAC: p.MAC, hostDown: true}, checkPeer)
	return l, err
}

// ensureRemotes makes the VXLAN device's static FDB entries (MAC -> VTEP)
// and neighbour entries (IP -> MAC, answered locally by the proxy) exactly
// those of the network's remote ports.
func (a *applier) ensureRemotes(network string, vx netlink.Link) error {
	h := a.h.nl
	idx := vx.Attrs().Index
	wantFDB := map[string]netip.Addr{}
	wantNeigh := map[netip.Addr]string{}
	for _, r := range a.s.Remotes {
		if r.Network != network {
			continue
		}
		wantFDB[r.MAC.String()] = r.VTEP
		for _, ip := range r.IPs {
			wantNeigh[ip.Unmap()] = r.MAC.String()
		}
		wantNeigh[linkLocal(r.MAC)] = r.MAC.String()
	}
	if last := a.h.remotes[network]; last != nil && maps.Equal(last.fdb, wantFDB) && maps.Equal(last.neigh, wantNeigh) {
		return nil
	}
	delete(a.h.remotes, network)
	rec := &remoteSet{fdb: maps.Clone(wantFDB), neigh: maps.Clone(wantNeigh)}
	fdb, err := h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("dataplane: fdb of %s: %w", vx.Attrs().Name, err)
	}
	haveFDB := map[string][]netip.Addr{}
	for _, e := range fdb {
		if e.Flags&unix.NTF_SELF == 0 || e.IP == nil || e.LinkIndex != idx {
			continue
		}
		ip, _ := netip.AddrFromSlice(e.IP)
		haveFDB[e.HardwareAddr.String()] = append(haveFDB[e.HardwareAddr.String()], ip.Unmap())
	}
	for mac, ips := range haveFDB {
		if w, ok := wantFDB[mac]; ok && len(ips) == 1 && ips[0] == w {
			delete(wantFDB, mac)
			continue
		}
		hw, _ := net.ParseMAC(mac)
		for _, ip := range ips {
			if err := h.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: unix.NTF_SELF,
				HardwareAddr: hw, IP: net.IP(ip.AsSlice())}); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("dataplane: delete fdb %s on %s: %w", mac, vx.Attrs().Name, err)
			}
			a.changes++
		}
	}
	for mac, vtep := range wantFDB {
		hw, _ := net.ParseMAC(mac)
		if err := h.NeighAppend(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: unix.NTF_SELF,
			State: unix.NUD_PERMANENT, HardwareAddr: hw, IP: net.IP(vtep.AsSlice())}); err != nil {
			return fmt.Errorf("dataplane: fdb %s -> %s on %s: %w", mac, vtep, vx.Attrs().Name, err)
		}
		a.changes++
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		ns, err := h.NeighList(idx, fam)
		if err != nil {
			return fmt.Errorf("dataplane: neighbours of %s: %w", vx.Attrs().Name, err)
		}
		for _, e := range ns {
			if e.LinkIndex != idx || e.State&unix.NUD_PERMANENT == 0 {
				continue
			}
			ip, _ := netip.AddrFromSlice(e.IP)
			ip = ip.Unmap()
			if w, ok := wantNeigh[ip]; ok && w == e.HardwareAddr.String() {
				delete(wantNeigh, ip)
				continue
			}
			if err := h.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: fam, IP: e.IP}); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("dataplane: delete neighbour %s on %s: %w", ip, vx.Attrs().Name, err)
			}
			a.changes++
		}
	}
	ips := make([]netip.Addr, 0, len(wantNeigh))
	for ip := range wantNeigh {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range ips {
		hw, _ := net.ParseMAC(wantNeigh[ip])
		fam := unix.AF_INET
		if ip.Is6() {
			fam = unix.AF_INET6
		}
		if err := h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: fam, State: unix.NUD_PERMANENT,
			IP: net.IP(ip.AsSlice()), HardwareAddr: hw}); err != nil {
			return fmt.Errorf("dataplane: neighbour %s on %s: %w", ip, vx.Attrs().Name, err)
		}
		a.changes++
	}
	a.h.remotes[network] = rec
	return nil
}

// applyFW commits the firewall in one nftables transaction and then
// closes the connections the new rules no longer admit.
func (a *applier) applyFW(nets map[string]*Network, ready []*Port) error {
	h := a.h
	if h.fw == nil {
		cur, err := loadFW(h.nft)
		if err != nil {
			return err
		}
		h.fw = cur
		// An agent restart forgets which policies the kernel's connections
		// were admitted under; only changes from now on close connections.
		h.pols = nil
	}
	a.mark("fw.load")
	if len(nets) == 0 && len(ready) == 0 {
		// Nothing to filter: an idle host carries no tables of ours (and a
		// host whose last network went is left as it was found).
		if h.fw.btable || h.fw.itable {
			if h.fw.btable {
				h.nft.DelTable(btable)
			}
			if h.fw.itable {
				h.nft.DelTable(itable)
			}
			if err := h.nft.Flush(); err != nil {
				h.fw = nil
				return fmt.Errorf("dataplane: removing our nftables tables: %w", err)
			}
			a.changes++
		}
		h.fw, h.pols, h.groups = newFwCurrent(), nil, nil
		return nil
	}
	d := buildFW(a.s, nets, ready)
	a.mark("fw.build")
	n, err := fwPlan(h.nft, h.fw, d)
	a.mark("fw.commit")
	a.changes += n
	if err != nil {
		h.fw = nil // re-read: the cache no longer says what the kernel holds
		return fmt.Errorf("dataplane: nftables transaction: %w", err)
	}
	groups := map[string]map[netip.Addr]bool{}
	for g, addrs := range a.s.Groups {
		m := map[netip.Addr]bool{}
		for _, ad := range addrs {
			m[ad.Unmap()] = true
		}
		groups[g] = m
	}
	if h.pols != nil {
		closed, err := closeConns(h.nl, h.pols, h.groups, d, groups)
		if err != nil {
			a.fail(err)
		}
		if closed > 0 {
			h.log.Info("closed connections no rule admits any more", "count", closed)
		}
	}
	h.pols = d.ports
	h.groups = groups
	return nil
}

// gc removes our devices and namespaces the State does not want.
func (a *applier) gc() {
	// Ports first, then legs, then what they were enslaved to.
	order := []byte{kindTap, kindVeth, kindRouter, kindGateway, kindService, kindVxlan, kindBridge, kindExternal}
	for _, k := range order {
		for name, l := range a.links {
			kind, _, _ := parseDevName(name)
			if kind != k || a.keep[name] {
				continue
			}
			if err := a.delLink(l); err != nil {
				a.fail(err)
			}
		}
	}
	for _, prefix := range []string{"ucs-", "ucr-"} {
		names, err := netns.List(a.h.opts.NamespaceDir, prefix)
		if err != nil {
			a.fail(err)
			continue
		}
		for _, name := range names {
			if a.keepNs[name] {
				continue
			}
			if _, _, ok := parseDevName(name); !ok {
				continue
			}
			if err := netns.Delete(a.h.nsPath(name)); err != nil {
				a.fail(err)
				continue
			}
			a.changes++
		}
	}
}
