//go:build linux

package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// Small builders for the nftables expressions this package uses. Register
// 1 is the first 16-byte register; 12 (NFT_REG32_04) is the 4-byte
// register right after it, where the second part of an
// "ifname . address" concatenation goes.
const (
	reg1      = 1
	regConcat = 12
)

// Header offsets.
const (
	offEthSrc   = 6
	offEthType  = 12
	offIP4Src   = 12
	offIP4Dst   = 16
	offIP6Src   = 8
	offIP6Dst   = 24
	offARPSha   = 8
	offARPSpa   = 14
	offThSport  = 0
	offThDport  = 2
	offTCPFlags = 13
)

const (
	ethIPv4 = 0x0800
	ethARP  = 0x0806
	ethIPv6 = 0x86dd

	nfprotoIPv4 = 2
	nfprotoIPv6 = 10

	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

func ifname(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func ldMeta(k expr.MetaKey) expr.Any { return &expr.Meta{Key: k, Register: reg1} }

func cmp(op expr.CmpOp, data []byte) expr.Any {
	return &expr.Cmp{Op: op, Register: reg1, Data: data}
}

func ldPayload(base expr.PayloadBase, off, n uint32) expr.Any {
	return &expr.Payload{DestRegister: reg1, Base: base, Offset: off, Len: n}
}

func ldNet(off, n uint32) expr.Any { return ldPayload(expr.PayloadBaseNetworkHeader, off, n) }
func ldTh(off, n uint32) expr.Any  { return ldPayload(expr.PayloadBaseTransportHeader, off, n) }
func ldEth(off, n uint32) expr.Any { return ldPayload(expr.PayloadBaseLLHeader, off, n) }

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

// matchEthType: ether type == t.
func matchEthType(t uint16) []expr.Any {
	return []expr.Any{ldEth(offEthType, 2), cmp(expr.CmpOpEq, be16(t))}
}

func matchL4(p uint8) []expr.Any {
	return []expr.Any{ldMeta(expr.MetaKeyL4PROTO), cmp(expr.CmpOpEq, []byte{p})}
}

func matchNfproto(p uint8) []expr.Any {
	return []expr.Any{ldMeta(expr.MetaKeyNFPROTO), cmp(expr.CmpOpEq, []byte{p})}
}

// matchCtState: ct state & bits != 0.
func matchCtState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		cmp(expr.CmpOpNeq, make([]byte, 4)),
	}
}

// matchAddr: the address at off == a (its family decides the length).
func matchAddr(off uint32, a netip.Addr) []expr.Any {
	b := a.AsSlice()
	return []expr.Any{ldNet(off, uint32(len(b))), cmp(expr.CmpOpEq, b)}
}

// matchPrefix: the address at off is in p.
func matchPrefix(off uint32, p netip.Prefix) []expr.Any {
	p = p.Masked()
	b := p.Addr().AsSlice()
	n := uint32(len(b))
	if p.Bits() == 8*len(b) {
		return matchAddr(off, p.Addr())
	}
	return []expr.Any{
		ldNet(off, n),
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: n,
			Mask: net.CIDRMask(p.Bits(), 8*len(b)), Xor: make([]byte, n)},
		cmp(expr.CmpOpEq, b),
	}
}

// matchInSet: the address at off is in the named set.
func matchInSet(off uint32, n uint32, set string) []expr.Any {
	return []expr.Any{ldNet(off, n), &expr.Lookup{SourceRegister: reg1, SetName: set}}
}

// matchPorts: transport destination port in [lo, hi].
func matchPorts(lo, hi uint16) []expr.Any {
	if lo == hi {
		return []expr.Any{ldTh(offThDport, 2), cmp(expr.CmpOpEq, be16(lo))}
	}
	return []expr.Any{ldTh(offThDport, 2), &expr.Range{Op: expr.CmpOpEq, Register: reg1, FromData: be16(lo), ToData: be16(hi)}}
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
