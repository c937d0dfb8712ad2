//go:build linux

package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ultracloud/ultracloud/internal/prismnet/netns"
)

// IFLA_BR_NF_CALL_IPTABLES / IP6TABLES (linux/if_link.h); the netlink
// library does not know them.
const (
	iflaBrNfCallIptables  = 36
	iflaBrNfCallIp6tables = 37
)

// listLinks dumps the links of a namespace, retrying a dump the kernel
// interrupted (the list changed while being read).
func listLinks(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for range 5 {
		var ls []netlink.Link
		ls, err = h.LinkList()
		if err == nil {
			return ls, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("dataplane: list links: %w", err)
}

func isUp(l netlink.Link) bool { return l.Attrs().Flags&net.FlagUp != 0 }

// setUp brings l up unless it is.
func (a *applier) setUp(h *netlink.Handle, l netlink.Link) error {
	if isUp(l) {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("dataplane: %s up: %w", l.Attrs().Name, err)
	}
	l.Attrs().Flags |= net.FlagUp // keep the record current
	a.changes++
	return nil
}

func (a *applier) setMTU(h *netlink.Handle, l netlink.Link, mtu int) error {
	if l.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("dataplane: %s mtu %d: %w", l.Attrs().Name, mtu, err)
	}
	l.Attrs().MTU = mtu
	a.changes++
	return nil
}

func (a *applier) setMaster(h *netlink.Handle, l netlink.Link, master netlink.Link) error {
	if l.Attrs().MasterIndex == master.Attrs().Index {
		return nil
	}
	if err := h.LinkSetMasterByIndex(l, master.Attrs().Index); err != nil {
		return fmt.Errorf("dataplane: %s master %s: %w", l.Attrs().Name, master.Attrs().Name, err)
	}
	l.Attrs().MasterIndex = master.Attrs().Index
	a.changes++
	return nil
}

func (a *applier) delLink(l netlink.Link) error {
	if err := a.h.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("dataplane: delete %s: %w", l.Attrs().Name, err)
	}
	delete(a.links, l.Attrs().Name)
	a.changes++
	return nil
}

// ensureBridge makes the bridge name exist, up, with mtu (0: leave), and
// (for network bridges) bridged IP traffic passed to the inet hooks.
func (a *applier) ensureBridge(name string, mtu int, nfCall bool) (netlink.Link, error) {
	h := a.h.nl
	l := a.links[name]
	if l != nil && l.Type() != "bridge" {
		if err := a.delLink(l); err != nil {
			return nil, err
		}
		l = nil
	}
	if l == nil {
		la := netlink.NewLinkAttrs()
		la.Name = name
		if mtu > 0 {
			la.MTU = mtu
		}
		br := &netlink.Bridge{LinkAttrs: la}
		if err := h.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("dataplane: create bridge %s: %w", name, err)
		}
		a.changes++
		var err error
		if l, err = h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("dataplane: bridge %s: %w", name, err)
		}
		a.links[name] = l
		delete(a.h.nfCallSet, name)
	}
	if mtu > 0 {
		if err := a.setMTU(h, l, mtu); err != nil {
			return nil, err
		}
	}
	if nfCall && !a.h.nfCallSet[name] {
		// Written once per bridge and Host: idempotent, and not readable
		// through the library. The per-namespace sysctl
		// net.bridge.bridge-nf-call-iptables defaults to 1 as well; the
		// per-bridge flag keeps security groups working if it is off.
		if err := a.h.setNfCall(l.Attrs().Index); err != nil {
			return nil, err
		}
		a.h.nfCallSet[name] = true
	}
	return l, a.setUp(h, l)
}

// setNfCall turns on IFLA_BR_NF_CALL_IPTABLES and IP6TABLES on a bridge.
func (h *Host) setNfCall(index int) error {
	return netns.Do(h.opts.Netns, func() error {
		req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(index)
		req.AddData(msg)
		li := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		li.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
		data := li.AddRtAttr(nl.IFLA_INFO_DATA, nil)
		data.AddRtAttr(iflaBrNfCallIptables, []byte{1})
		data.AddRtAttr(iflaBrNfCallIp6tables, []byte{1})
		req.AddData(li)
		if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
			return fmt.Errorf("dataplane: bridge %d nf_call_iptables: %w", index, err)
		}
		return nil
	})
}

// ensureVxlan makes the network's VXLAN device: VNI, local = underlay,
// UDP 4789, no learning, ARP/ND proxy from the static neighbour table.
func (a *applier) ensureVxlan(n *Network, br netlink.Link, underlay netip.Addr) (netlink.Link, error) {
	h := a.h.nl
	name := devName(kindVxlan, n.ID)
	var vtepDev int
	if a.h.opts.UnderlayDevice != "" {
		ul, err := h.LinkByName(a.h.opts.UnderlayDevice)
		if err != nil {
			return nil, fmt.Errorf("dataplane: underlay device %s: %w", a.h.opts.UnderlayDevice, err)
		}
		vtepDev = ul.Attrs().Index
	}
	l := a.links[name]
	if l != nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || vx.VxlanId != int(n.VNI) || !vx.SrcAddr.Equal(net.IP(underlay.AsSlice())) || vx.Port != 4789 || vx.Learning || !vx.Proxy || vx.VtepDevIndex != vtepDev {
			// A changed VNI or underlay cannot be modified in place.
			if err := a.delLink(l); err != nil {
				return nil, err
			}
			l = nil
		}
	}
	if l == nil {
		la := netlink.NewLinkAttrs()
		la.Name = name
		la.MTU = n.mtu()
		vx := &netlink.Vxlan{LinkAttrs: la, VxlanId: int(n.VNI), SrcAddr: net.IP(underlay.AsSlice()),
			Port: 4789, Learning: false, Proxy: true, VtepDevIndex: vtepDev}
		if err := h.LinkAdd(vx); err != nil {
			return nil, fmt.Errorf("dataplane: create vxlan %s (vni %d): %w", name, n.VNI, err)
		}
		a.changes++
		var err error
		if l, err = h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("dataplane: vxlan %s: %w", name, err)
		}
		a.links[name] = l
	}
	if err := a.setMTU(h, l, n.mtu()); err != nil {
		return nil, err
	}
	if err := a.setMaster(h, l, br); err != nil {
		return nil, err
	}
	return l, a.setUp(h, l)
}

// nsPath is where the Host pins namespace name.
func (h *Host) nsPath(name string) string { return filepath.Join(h.opts.NamespaceDir, name) }

// ensureNamespace pins namespace name and returns a handle on it.
func (a *applier) ensureNamespace(name string) (vnetns.NsHandle, error) {
	path := a.h.nsPath(name)
	ns, err := netns.Open(path)
	if err == nil {
		return ns, nil
	}
	if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, netns.ErrNotNamespace) {
		return vnetns.None(), err
	}
	// A leftover plain file (a crash between create and mount) is replaced.
	_ = os.Remove(path)
	if err := netns.Create(path); err != nil {
		return vnetns.None(), err
	}
	a.changes++
	return netns.Open(path)
}

// nsHandle opens a netlink handle in ns, closed by the applier at the end.
func (a *applier) nsHandle(ns vnetns.NsHandle) (*netlink.Handle, error) {
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("dataplane: netlink in namespace: %w", err)
	}
	a.closers = append(a.closers, nh.Close)
	return nh, nil
}

// vethSpec is one veth pair to ensure: host end in the Host's namespace,
// peer in another namespace.
type vethSpec struct {
	host      string
	hostAlias string // "" for none; a port's names its port
	// hostDown leaves the host end's state to the caller: a port's host
	// end comes up only once the port's filters exist.
	hostDown   bool
	master     netlink.Link
	mtu        int
	peerNs     vnetns.NsHandle
	peerName   string
	peerMAC    net.HardwareAddr
	peerAddrs  []netip.Prefix // configured on the peer (service and router legs)
	peerNoIPv6 bool
}

// ensureVeth makes the pair exist, returns the peer's netlink handle (nil
// when the pair existed and is trusted as is: the peer lives in another
// namespace and reading it for every port on every Apply would be the
// slow part of a 1,000-port reconcile). checkPeer reads and fixes the
// peer of an existing pair too; a new pair's peer is always set up.
func (a *applier) ensureVeth(v vethSpec, checkPeer bool) (netlink.Link, *netlink.Handle, error) {
	h := a.h.nl
	l := a.links[v.host]
	if l != nil && (l.Type() != "veth" || (v.hostAlias != "" && l.Attrs().Alias != v.hostAlias)) {
		if err := a.delLink(l); err != nil {
			return nil, nil, err
		}
		l = nil
	}
	created := false
	if l == nil {
		la := netlink.NewLinkAttrs()
		la.Name = v.host
		la.MTU = v.mtu
		la.Alias = v.hostAlias
		veth := &netlink.Veth{LinkAttrs: la, PeerName: v.peerName, PeerHardwareAddr: v.peerMAC,
			PeerNamespace: netlink.NsFd(int(v.peerNs)), PeerMTU: uint32(v.mtu)}
		if err := h.LinkAdd(veth); err != nil {
			return nil, nil, fmt.Errorf("dataplane: create veth %s (peer %s): %w", v.host, v.peerName, err)
		}
		a.changes++
		created = true
		var err error
		if l, err = h.LinkByName(v.host); err != nil {
			return nil, nil, fmt.Errorf("dataplane: veth %s: %w", v.host, err)
		}
		if v.hostAlias != "" {
			// The kernel ignores IFLA_IFALIAS when it creates a link.
			if err := h.LinkSetAlias(l, v.hostAlias); err != nil {
				return nil, nil, fmt.Errorf("dataplane: veth %s alias: %w", v.host, err)
			}
			l.Attrs().Alias = v.hostAlias
		}
		a.links[v.host] = l
	}
	if err := a.setMTU(h, l, v.mtu); err != nil {
		return nil, nil, err
	}
	if v.master != nil {
		if err := a.setMaster(h, l, v.master); err != nil {
			return nil, nil, err
		}
	}
	if !v.hostDown {
		if err := a.setUp(h, l); err != nil {
			return nil, nil, err
		}
	}
	if !created && !checkPeer {
		return l, nil, nil
	}
	ph, err := a.nsHandle(v.peerNs)
	if err != nil {
		return nil, nil, err
	}
	peer, err := ph.LinkByName(v.peerName)
	if err != nil {
		return nil, nil, fmt.Errorf("dataplane: veth peer %s: %w", v.peerName, err)
	}
	if v.peerMAC != nil && !bytes.Equal(peer.Attrs().HardwareAddr, v.peerMAC) {
		if err := ph.LinkSetHardwareAddr(peer, v.peerMAC); err != nil {
			return nil, nil, fmt.Errorf("dataplane: veth peer %s mac: %w", v.peerName, err)
		}
		a.changes++
	}
	if err := a.setMTU(ph, peer, v.mtu); err != nil {
		return nil, nil, err
	}
	if err := a.setUp(ph, peer); err != nil {
		return nil, nil, err
	}
	if v.peerAddrs != nil {
		if err := a.ensureAddrs(ph, peer, v.peerAddrs); err != nil {
			return nil, nil, err
		}
	}
	return l, ph, nil
}

// ensureAddrs makes the addresses of l (global scope; link-local ones are
// the kernel's) exactly want.
func (a *applier) ensureAddrs(h *netlink.Handle, l netlink.Link, want []netip.Prefix) error {
	have, err := h.AddrList(l, unix.AF_UNSPEC)
	if err != nil {
		return fmt.Errorf("dataplane: addresses of %s: %w", l.Attrs().Name, err)
	}
	wantSet := map[netip.Prefix]bool{}
	for _, p := range want {
		wantSet[p] = true
	}
	for _, ad := range have {
		ip, _ := netip.AddrFromSlice(ad.IP)
		ip = ip.Unmap()
		if ip.IsLinkLocalUnicast() && ip.Is6() {
			continue
		}
		ones, _ := ad.Mask.Size()
		p := netip.PrefixFrom(ip, ones)
		if wantSet[p] {
			delete(wantSet, p)
			continue
		}
		if err := h.AddrDel(l, &ad); err != nil {
			return fmt.Errorf("dataplane: remove %s from %s: %w", p, l.Attrs().Name, err)
		}
		a.changes++
	}
	for _, p := range want {
		if !wantSet[p] {
			continue
		}
		ad := &netlink.Addr{IPNet: prefixNet(p)}
		if p.Addr().Is6() {
			// The same service address exists on every host; DAD would
			// only delay it.
			ad.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, ad); err != nil {
			return fmt.Errorf("dataplane: add %s to %s: %w", p, l.Attrs().Name, err)
		}
		a.changes++
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// loUp brings up the loopback device of a namespace (new namespaces start
// with it down, and the metadata proxy may want to listen on it).
func (a *applier) loUp(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("dataplane: lo: %w", err)
	}
	return a.setUp(h, lo)
}

// writeSysctl writes a /proc/sys file from inside a namespace: /proc/sys/net
// shows the namespace of the writing thread.
func writeSysctl(nsPath, file, value string) error {
	return netns.Do(nsPath, func() error {
		cur, err := os.ReadFile(file)
		if err == nil && string(bytes.TrimSpace(cur)) == value {
			return nil
		}
		if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
			return fmt.Errorf("dataplane: write %s: %w", file, err)
		}
		return nil
	})
}

// createTaps creates persistent taps (single queue, IFF_TAP|IFF_NO_PI) in
// the Host's namespace, all on one thread that is in that namespace.
func (h *Host) createTaps(names []string) map[string]error {
	errs := map[string]error{}
	err := netns.Do(h.opts.Netns, func() error {
		for _, name := range names {
			errs[name] = createTap(name)
		}
		return nil
	})
	if err != nil {
		for _, name := range names {
			errs[name] = err
		}
	}
	return errs
}

func createTap(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("dataplane: create tap %s: open /dev/net/tun: %w", name, err)
	}
	defer unix.Close(fd)
	var req struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(req.name[:], name)
	req.flags = unix.IFF_TAP | unix.IFF_NO_PI
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); errno != 0 {
		return fmt.Errorf("dataplane: create tap %s: TUNSETIFF: %w", name, errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETPERSIST, 1); errno != 0 {
		return fmt.Errorf("dataplane: create tap %s: TUNSETPERSIST: %w", name, errno)
	}
	return nil
}
