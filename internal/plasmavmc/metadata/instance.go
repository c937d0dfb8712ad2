package metadata

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/uuid"
)

// ErrInvalid marks an Instance that cannot be rendered; the wrapped message
// names the field and the problem.
var ErrInvalid = errors.New("metadata: invalid instance")

// ErrNoInstance is what a lookup returns when a request belongs to no known
// instance; Handler answers it with 404.
var ErrNoInstance = errors.New("metadata: no instance for this request")

// Limits. MaxUserDataBytes is the largest user-data (and vendor-data)
// accepted, counted raw: the size of Azure's custom data and about what
// Nova's 64 KiB of base64 holds, far above what a cloud-config needs and
// small enough that serving it to every boot costs nothing. The API should
// refuse bigger user-data with this same constant.
const (
	MaxUserDataBytes = 64 << 10
	MaxSSHKeys       = 32
	MaxSSHKeyBytes   = 16 << 10
	MaxNICs          = 16
)

// DefaultAvailabilityZone is the zone reported when Instance leaves it empty.
const DefaultAvailabilityZone = "ultracloud"

// Instance is everything the guest may learn about itself. The renderers
// never change it; defaults are applied to a copy.
type Instance struct {
	// ID is the instance-id of NoCloud and EC2: cloud-init treats a change
	// of it as a new instance and re-runs its per-instance modules, so it
	// must stay the same for the VM's whole life.
	ID string
	// UUID is the OpenStack uuid. cloud-init's OpenStack datasource checks
	// it against the SMBIOS system UUID, so the VM's QEMU must be started
	// with -uuid set to the same value.
	UUID string
	// Name is the VM's name as users know it (OpenStack "name").
	Name string
	// Hostname is what cloud-init sets as the guest's hostname: one or
	// more RFC 1123 labels; a dotted name also becomes the FQDN.
	Hostname string
	// Project is the owning project (OpenStack "project_id").
	Project string
	// SSHKeys go to the default user's authorized_keys.
	SSHKeys []SSHKey
	// UserData is passed to cloud-init unchanged (cloud-config, script,
	// MIME multipart...); nil means none (EC2 user-data then answers 404).
	UserData []byte
	// VendorData is the operator's cloud-config, applied before user-data
	// and overridable by it; nil means none.
	VendorData []byte
	// NICs in guest order: NIC 0 is the primary one (EC2 mac, local-ipv4).
	NICs []NIC
	// AvailabilityZone defaults to DefaultAvailabilityZone.
	AvailabilityZone string
	// InstanceType is a free-form size name ("2c-4g"); empty omits it.
	InstanceType string
}

// SSHKey is one public key. Name labels it in EC2's public-keys listing and
// OpenStack's keys; empty becomes "key-N" (N its index).
type SSHKey struct {
	Name string
	Key  string // one line in authorized_keys format: "TYPE BASE64 [COMMENT]"
}

// NIC is one virtio-net device of the guest and its addressing.
type NIC struct {
	// ID names the port (EC2 interface-id, OpenStack link vif_id); optional.
	ID string
	// Network names the network the port is on (EC2 vpc-id, OpenStack
	// network_id); optional.
	Network string
	// MAC is the guest-side address, the key every rendering matches the
	// NIC by (guest interface names are the guest's business).
	MAC string
	// Addresses are the NIC's static addresses with their prefix length
	// (10.0.0.5/24, fd00::5/64). None means the NIC is configured by DHCP.
	Addresses []netip.Prefix
	// Gateway4 and Gateway6 are the default routers (zero: none). Gateway4
	// must lie in one of the NIC's IPv4 prefixes; Gateway6 in an IPv6
	// prefix or be link-local.
	Gateway4 netip.Addr
	Gateway6 netip.Addr
	// DNS servers and search domains for this NIC.
	DNS           []netip.Addr
	SearchDomains []string
	// MTU of the link; 0 leaves the guest's default (or DHCP's option 26).
	MTU int
	// Routes beyond the default ones.
	Routes []Route
}

// Route is one static route of a NIC.
type Route struct {
	To  netip.Prefix // masked network: 192.168.0.0/16
	Via netip.Addr
}

// normalized returns a copy with defaults applied and MACs in lower case,
// or an ErrInvalid error naming the first bad field.
func (in *Instance) normalized() (*Instance, error) {
	if in == nil {
		return nil, fmt.Errorf("%w: no instance", ErrInvalid)
	}
	c := *in
	c.SSHKeys = append([]SSHKey(nil), in.SSHKeys...)
	c.NICs = append([]NIC(nil), in.NICs...)
	if c.AvailabilityZone == "" {
		c.AvailabilityZone = DefaultAvailabilityZone
	}
	for i := range c.SSHKeys {
		if c.SSHKeys[i].Name == "" {
			c.SSHKeys[i].Name = fmt.Sprintf("key-%d", i)
		}
	}
	for i := range c.NICs {
		c.NICs[i].MAC = strings.ToLower(c.NICs[i].MAC)
	}
	c.UUID = strings.ToLower(c.UUID)
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return &c, nil
}

// Validate reports whether in can be rendered; the error wraps ErrInvalid
// and names the field.
func (in *Instance) Validate() error {
	_, err := in.normalized()
	return err
}

func (in *Instance) validate() error {
	if err := checkToken("id", in.ID, 128); err != nil {
		return err
	}
	if u, err := uuid.Parse(in.UUID); err != nil || u.String() != in.UUID {
		return fmt.Errorf("uuid %q is not a UUID in its canonical 8-4-4-4-12 form", in.UUID)
	}
	if in.Name == "" || len(in.Name) > 255 || hasControl(in.Name) {
		return fmt.Errorf("name %q must be 1-255 characters without control characters", in.Name)
	}
	if err := checkHostname("hostname", in.Hostname); err != nil {
		return err
	}
	if len(in.Project) > 255 || hasControl(in.Project) {
		return fmt.Errorf("project %q must be at most 255 characters without control characters", in.Project)
	}
	if err := checkToken("availability zone", in.AvailabilityZone, 64); err != nil {
		return err
	}
	if in.InstanceType != "" {
		if err := checkToken("instance type", in.InstanceType, 64); err != nil {
			return err
		}
	}
	if n := len(in.UserData); n > MaxUserDataBytes {
		return fmt.Errorf("user-data is %d bytes, over the limit of %d", n, MaxUserDataBytes)
	}
	if n := len(in.VendorData); n > MaxUserDataBytes {
		return fmt.Errorf("vendor-data is %d bytes, over the limit of %d", n, MaxUserDataBytes)
	}
	if len(in.SSHKeys) > MaxSSHKeys {
		return fmt.Errorf("%d SSH keys, over the limit of %d", len(in.SSHKeys), MaxSSHKeys)
	}
	names := map[string]bool{}
	for i, k := range in.SSHKeys {
		// The name appears in EC2's "N=NAME" listing line and as a JSON
		// key: keep it to characters no consumer splits on.
		if err := checkToken(fmt.Sprintf("ssh key %d name", i), k.Name, 64); err != nil {
			return err
		}
		if names[k.Name] {
			return fmt.Errorf("ssh key name %q is used twice", k.Name)
		}
		names[k.Name] = true
		if err := checkSSHKey(k.Key); err != nil {
			return fmt.Errorf("ssh key %q: %w", k.Name, err)
		}
	}
	if len(in.NICs) > MaxNICs {
		return fmt.Errorf("%d NICs, over the limit of %d", len(in.NICs), MaxNICs)
	}
	macs := map[string]bool{}
	for i, n := range in.NICs {
		if err := n.validate(); err != nil {
			return fmt.Errorf("nic %d: %w", i, err)
		}
		if macs[n.MAC] {
			return fmt.Errorf("nic %d: mac %s is used by another NIC", i, n.MAC)
		}
		macs[n.MAC] = true
	}
	return nil
}

func (n *NIC) validate() error {
	if n.ID != "" {
		if err := checkToken("id", n.ID, 128); err != nil {
			return err
		}
	}
	if n.Network != "" {
		if err := checkToken("network", n.Network, 128); err != nil {
			return err
		}
	}
	hw, err := net.ParseMAC(n.MAC)
	if err != nil || len(hw) != 6 || hw.String() != n.MAC {
		return fmt.Errorf("mac %q is not an Ethernet address written aa:bb:cc:dd:ee:ff", n.MAC)
	}
	if hw[0]&1 != 0 {
		return fmt.Errorf("mac %s is a multicast address", n.MAC)
	}
	seen := map[netip.Addr]bool{}
	var has4, has6 bool
	for _, p := range n.Addresses {
		a := p.Addr()
		if !p.IsValid() || a.Zone() != "" || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return fmt.Errorf("address %s is not a usable host address with a prefix length", p)
		}
		if seen[a] {
			return fmt.Errorf("address %s is given twice", a)
		}
		seen[a] = true
		if a.Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	if n.Gateway4.IsValid() {
		if !n.Gateway4.Is4() {
			return fmt.Errorf("gateway4 %s is not an IPv4 address", n.Gateway4)
		}
		if !n.onLink(n.Gateway4) {
			return fmt.Errorf("gateway4 %s is in none of the NIC's IPv4 prefixes", n.Gateway4)
		}
	}
	if n.Gateway6.IsValid() {
		if !n.Gateway6.Is6() || n.Gateway6.Is4In6() || n.Gateway6.Zone() != "" {
			return fmt.Errorf("gateway6 %s is not an IPv6 address", n.Gateway6)
		}
		if !has6 {
			return fmt.Errorf("gateway6 %s given without a static IPv6 address", n.Gateway6)
		}
		if !n.onLink(n.Gateway6) {
			return fmt.Errorf("gateway6 %s is neither link-local nor in one of the NIC's IPv6 prefixes", n.Gateway6)
		}
	}
	for _, d := range n.DNS {
		if !d.IsValid() || d.Zone() != "" || d.IsUnspecified() || d.IsMulticast() {
			return fmt.Errorf("dns server %s is not a unicast address", d)
		}
	}
	for _, s := range n.SearchDomains {
		if err := checkHostname("search domain", strings.TrimSuffix(s, ".")); err != nil {
			return err
		}
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 65535) {
		return fmt.Errorf("mtu %d is outside 576-65535", n.MTU)
	}
	if n.MTU != 0 && has6 && n.MTU < 1280 {
		return fmt.Errorf("mtu %d is below IPv6's minimum of 1280", n.MTU)
	}
	for _, r := range n.Routes {
		if !r.To.IsValid() || r.To.Masked() != r.To {
			return fmt.Errorf("route to %s: the destination must be a network with its host bits zero", r.To)
		}
		if r.To.Bits() == 0 {
			return fmt.Errorf("route to %s: give the default route as gateway4/gateway6", r.To)
		}
		if !r.Via.IsValid() || r.Via.Is4() != r.To.Addr().Is4() {
			return fmt.Errorf("route to %s: via %s is not an address of the same family", r.To, r.Via)
		}
		if !n.onLink(r.Via) {
			return fmt.Errorf("route to %s: via %s is not on the NIC's link", r.To, r.Via)
		}
	}
	if (n.Gateway4.IsValid() && !has4) || (len(n.Routes) > 0 && len(n.Addresses) == 0) {
		return errors.New("gateways and routes need static addresses (a DHCP NIC takes them from DHCP)")
	}
	return nil
}

// onLink reports whether a is reachable without a router: inside one of the
// NIC's prefixes, or IPv6 link-local.
func (n *NIC) onLink(a netip.Addr) bool {
	if a.Is6() && a.IsLinkLocalUnicast() {
		return true
	}
	for _, p := range n.Addresses {
		if p.Masked().Contains(a) && a != p.Addr() {
			return true
		}
	}
	return false
}

// checkToken accepts 1..max characters of [A-Za-z0-9._@+-]: values that go
// into listings, paths, YAML and JSON without quoting surprises.
func checkToken(field, s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%s %q must be 1-%d characters", field, s, max)
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.' || r == '_' || r == '-' || r == '@' || r == '+':
		default:
			return fmt.Errorf("%s %q has %q; only letters, digits and . _ - @ + are allowed", field, s, r)
		}
	}
	return nil
}

// checkHostname accepts RFC 1123 names: dot-separated labels of letters,
// digits and inner hyphens, each 1-63 long, 253 in all.
func checkHostname(field, s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("%s %q must be 1-253 characters", field, s)
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%s %q: label %q must be 1-63 characters and not begin or end with '-'", field, s, l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("%s %q has %q; only letters, digits, '-' and '.' are allowed", field, s, r)
			}
		}
	}
	return nil
}

// checkSSHKey accepts one authorized_keys line "TYPE BASE64 [COMMENT]"
// without options: a newline would split it into two keys in EC2's
// answers (cloud-init turns a multi-line leaf into a list) and in YAML.
func checkSSHKey(k string) error {
	if k == "" || len(k) > MaxSSHKeyBytes {
		return fmt.Errorf("key must be 1-%d bytes", MaxSSHKeyBytes)
	}
	if hasControl(k) {
		return errors.New("key has a newline or another control character; give one key per entry")
	}
	f := strings.Fields(k)
	if len(f) < 2 || strings.TrimSpace(k) != k {
		return errors.New(`key is not "TYPE BASE64 [COMMENT]"`)
	}
	if !strings.HasPrefix(f[0], "ssh-") && !strings.HasPrefix(f[0], "ecdsa-") && !strings.HasPrefix(f[0], "sk-") {
		return fmt.Errorf("key type %q is not an OpenSSH public key type", f[0])
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}
