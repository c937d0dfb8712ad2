package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Outcome says what the server did with one request; it is a constant
// string so logs and tests can key on it.
type Outcome string

// The outcomes of Decide.
const (
	OutcomeOffer      Outcome = "offer"       // DISCOVER answered with the port's address
	OutcomeAck        Outcome = "ack"         // REQUEST for the port's address confirmed
	OutcomeNak        Outcome = "nak"         // REQUEST for another address refused
	OutcomeInform     Outcome = "inform"      // INFORM answered with configuration, no lease
	OutcomeRelease    Outcome = "release"     // RELEASE noted; the address stays the port's
	OutcomeDecline    Outcome = "decline"     // DECLINE noted; the address stays the port's
	OutcomeUnknownMAC Outcome = "unknown_mac" // MAC not in the table: no answer at all
	OutcomeOtherSrv   Outcome = "other_server"
	OutcomeIgnored    Outcome = "ignored" // not something a client on this segment should send
	OutcomeMalformed  Outcome = "malformed"
)

// Ports of DHCPv4 (RFC 2131).
const (
	ServerPort = 67
	ClientPort = 68
)

var broadcast = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ClientPort)

// Decision is the server's answer to one request.
type Decision struct {
	// Reply is the message to send, or nil when nothing is sent.
	Reply *dhcpv4.DHCPv4
	// To is where Reply goes: 255.255.255.255:68 on the interface, or the
	// port's own address when the client already has it (ciaddr).
	To netip.AddrPort
	// Outcome and Why are for the log: Why is a constant phrase.
	Outcome Outcome
	Why     string
	// Addr is the port's address from the table, when the MAC is known.
	Addr netip.Addr
}

// DecideBytes parses one request and decides on it; a packet that does not
// parse gets OutcomeMalformed.
func DecideBytes(serverID netip.Addr, t *Table, b []byte) Decision {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		return Decision{Outcome: OutcomeMalformed, Why: "not a DHCPv4 message"}
	}
	return Decide(serverID, t, m)
}

// Decide is the whole DHCP policy as a pure function of the server
// identifier (the service address), the lease table and one request. It
// answers only MACs in t, and only ever with the address t holds for them.
func Decide(serverID netip.Addr, t *Table, req *dhcpv4.DHCPv4) Decision {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return Decision{Outcome: OutcomeIgnored, Why: "not a BOOTREQUEST"}
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return Decision{Outcome: OutcomeIgnored, Why: "not an Ethernet client"}
	}
	// Frames from the service namespace never leave the host and no relay
	// runs there, so a relayed request is not ours to answer.
	if ip4(req.GatewayIPAddr).IsValid() && !ip4(req.GatewayIPAddr).IsUnspecified() {
		return Decision{Outcome: OutcomeIgnored, Why: "relayed request (giaddr set)"}
	}
	e := t.lookup(req.ClientHWAddr)
	if e == nil {
		return Decision{Outcome: OutcomeUnknownMAC, Why: "MAC not in the lease table"}
	}
	d := Decision{Addr: e.ip}
	ciaddr := ip4(req.ClientIPAddr)
	sid := ip4(req.ServerIdentifier())
	requested := ip4(req.RequestedIPAddress())

	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		d.Outcome, d.Why = OutcomeOffer, "discover"
		d.Reply = reply(req, serverID, e, dhcpv4.MessageTypeOffer, true)
		d.Reply.YourIPAddr = e.ip.AsSlice()
		d.To = destination(req, e)
		return d

	case dhcpv4.MessageTypeRequest:
		var ok bool
		switch {
		case sid.IsValid():
			// SELECTING: the client picked a server by its identifier.
			if sid != serverID {
				d.Outcome, d.Why = OutcomeOtherSrv, "client selected another server"
				return d
			}
			d.Why = "selecting"
			ok = requested == e.ip
		case requested.IsValid():
			d.Why = "init-reboot"
			ok = requested == e.ip
		case ciaddr.IsValid() && !ciaddr.IsUnspecified():
			// RENEWING (unicast) and REBINDING (broadcast) look the same
			// here: the client holds ciaddr and asks to keep it.
			d.Why = "renewing or rebinding"
			ok = ciaddr == e.ip
		default:
			d.Outcome, d.Why = OutcomeIgnored, "request names no address"
			return d
		}
		if !ok {
			d.Outcome = OutcomeNak
			d.Reply = nak(req, serverID)
			// RFC 2131 4.3.2: without a relay, a NAK is broadcast; the
			// client may not hold the address it asked for.
			d.To = broadcast
			return d
		}
		d.Outcome = OutcomeAck
		d.Reply = reply(req, serverID, e, dhcpv4.MessageTypeAck, true)
		d.Reply.YourIPAddr = e.ip.AsSlice()
		if ciaddr == e.ip {
			d.Reply.ClientIPAddr = e.ip.AsSlice()
		}
		d.To = destination(req, e)
		return d

	case dhcpv4.MessageTypeInform:
		// The client configured its address itself and asks for the rest;
		// answer only when that address is the port's, and unicast to it.
		if ciaddr != e.ip {
			d.Outcome, d.Why = OutcomeIgnored, "inform from an address that is not the port's"
			return d
		}
		d.Outcome, d.Why = OutcomeInform, "inform"
		d.Reply = reply(req, serverID, e, dhcpv4.MessageTypeAck, false)
		d.Reply.ClientIPAddr = e.ip.AsSlice()
		d.To = netip.AddrPortFrom(e.ip, ClientPort)
		return d

	case dhcpv4.MessageTypeRelease:
		if sid.IsValid() && sid != serverID {
			d.Outcome, d.Why = OutcomeOtherSrv, "release for another server"
			return d
		}
		d.Outcome, d.Why = OutcomeRelease, "address stays the port's: IPAM owns it"
		return d

	case dhcpv4.MessageTypeDecline:
		if sid.IsValid() && sid != serverID {
			d.Outcome, d.Why = OutcomeOtherSrv, "decline for another server"
			return d
		}
		d.Outcome, d.Why = OutcomeDecline, "client saw the address in use; it stays the port's: IPAM owns it"
		return d
	}
	d.Outcome, d.Why = OutcomeIgnored, "message type a server does not answer"
	return d
}

// destination follows RFC 2131 4.1 for a server without relays: unicast to
// ciaddr when the client holds the port's address, otherwise broadcast (the
// other choice, unicast to yiaddr before the client has it, needs a raw
// socket to skip ARP; broadcast reaches the client either way, and frames
// on this segment stay on the host). ciaddr is only trusted when it is the
// port's own address, so a request can never steer a reply elsewhere.
func destination(req *dhcpv4.DHCPv4, e *entry) netip.AddrPort {
	if ip4(req.ClientIPAddr) == e.ip {
		return netip.AddrPortFrom(e.ip, ClientPort)
	}
	return broadcast
}

// reply builds an OFFER or ACK for e: the lease's options, the server
// identifier and, when withLease, the lease times.
func reply(req *dhcpv4.DHCPv4, serverID netip.Addr, e *entry, mt dhcpv4.MessageType, withLease bool) *dhcpv4.DHCPv4 {
	r := base(req)
	for code, v := range e.opts {
		r.Options[code] = v
	}
	r.UpdateOption(dhcpv4.OptMessageType(mt))
	r.UpdateOption(dhcpv4.OptServerIdentifier(serverID.AsSlice()))
	if withLease {
		secs := uint32(e.dur.Seconds())
		r.Options[dhcpv4.OptionIPAddressLeaseTime.Code()] = binary.BigEndian.AppendUint32(nil, secs)
		r.Options[dhcpv4.OptionRenewTimeValue.Code()] = binary.BigEndian.AppendUint32(nil, secs/2)
		r.Options[dhcpv4.OptionRebindingTimeValue.Code()] = binary.BigEndian.AppendUint32(nil, uint32(uint64(secs)*7/8))
	}
	return r
}

func nak(req *dhcpv4.DHCPv4, serverID netip.Addr) *dhcpv4.DHCPv4 {
	r := base(req)
	r.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeNak))
	r.UpdateOption(dhcpv4.OptServerIdentifier(serverID.AsSlice()))
	r.UpdateOption(dhcpv4.OptMessage("requested address is not this port's"))
	return r
}

// base is the reply header every answer shares (RFC 2131 table 3).
func base(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientHWAddr:  append(net.HardwareAddr(nil), req.ClientHWAddr...),
		Options:       dhcpv4.Options{},
	}
	// RFC 6842: a client identifier in the request is echoed.
	if id := req.Options.Get(dhcpv4.OptionClientIdentifier); len(id) > 0 {
		r.Options[dhcpv4.OptionClientIdentifier.Code()] = append([]byte(nil), id...)
	}
	return r
}

// ip4 converts a 4-byte (or 4-in-16) IP to netip; anything else is the zero
// Addr.
func ip4(ip net.IP) netip.Addr {
	v4 := ip.To4()
	if v4 == nil {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte(v4))
}
