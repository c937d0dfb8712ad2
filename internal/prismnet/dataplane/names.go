package dataplane

import (
	"crypto/sha256"
	"encoding/base32"
	"net"
	"net/netip"
	"regexp"
	"strings"
)

// Every object of ours carries the prefix "uc" followed by a kind letter
// and a dash; nothing else is ever modified or removed.
const (
	kindBridge   = 'b' // ucb-<net>: a network's bridge
	kindVxlan    = 'x' // ucx-<net>: a network's VXLAN device
	kindService  = 's' // ucs-<net>: service veth (host side) and service namespace
	kindTap      = 't' // uct-<port>: a VM port
	kindVeth     = 'v' // ucv-<port>: a namespace port (host side)
	kindRouter   = 'r' // ucr-<hash>: a router's leg into a network; ucr-<router> namespace
	kindGateway  = 'g' // ucg-<router>: a router's leg into an external network
	kindExternal = 'e' // uce-<ext>: an external network's bridge
)

// maxIfName is IFNAMSIZ-1.
const maxIfName = 15

func devName(kind byte, key string) string { return "uc" + string(kind) + "-" + key }

var portKeyRE = regexp.MustCompile(`^[a-z0-9]{1,11}$`)

// portKey is the part of a port's device name after "uct-"/"ucv-": the ID
// itself when it fits, else 11 characters of its hash.
func portKey(id string) string {
	if portKeyRE.MatchString(id) {
		return id
	}
	return hashKey(id, 11)
}

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// hashKey is n characters of a hash of s from [a-z2-7].
func hashKey(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return b32.EncodeToString(sum[:])[:n]
}

func portDev(p *Port) string {
	if p.Device == Tap {
		return devName(kindTap, portKey(p.ID))
	}
	return devName(kindVeth, portKey(p.ID))
}

// legDev is the host side of router r's leg into network n.
func legDev(router, network string) string {
	return devName(kindRouter, hashKey(router+"/"+network, 11))
}

// legInner is the name of that leg inside the router namespace.
func legInner(network string) string { return "qr-" + network }

const gwInner = "qg"

// parseDevName splits one of our device names into kind and key; ok is
// false for anything not ours (which is then never touched).
func parseDevName(name string) (kind byte, key string, ok bool) {
	if len(name) < 5 || len(name) > maxIfName || !strings.HasPrefix(name, "uc") || name[3] != '-' {
		return 0, "", false
	}
	kind = name[2]
	switch kind {
	case kindBridge, kindVxlan, kindService, kindTap, kindVeth, kindRouter, kindGateway, kindExternal:
	default:
		return 0, "", false
	}
	key = name[4:]
	for i := 0; i < len(key); i++ {
		c := key[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return 0, "", false
		}
	}
	return kind, key, true
}

// The alias (IFLA_IFALIAS) of a port device records the port ID, so that
// Observe and a restarted agent know which port a hashed name belongs to.
const aliasPrefix = "ultracloud port "

func portAlias(id string) string { return aliasPrefix + id }

// parsePortAlias returns the port ID from an alias written by portAlias.
func parsePortAlias(alias string) (string, bool) {
	id, ok := strings.CutPrefix(alias, aliasPrefix)
	if !ok || id == "" || len(id) > 200 || strings.ContainsAny(id, "\x00\n") {
		return "", false
	}
	return id, true
}

// linkLocal is the EUI-64 IPv6 link-local address of mac (RFC 4291 2.5.1):
// the address Linux gives an interface by default.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	if len(mac) != 6 {
		return netip.Addr{}
	}
	a[8] = mac[0] ^ 0x02
	a[9], a[10] = mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// DeviceName is the host device of a port (uct-... or ucv-...), as the
// agent reports it in the port's status.
func DeviceName(p Port) string { return portDev(&p) }

// ServiceInterface is the name of the interface inside a network's
// service namespace (where the DHCP server and RA sender listen).
const ServiceInterface = "eth0"
