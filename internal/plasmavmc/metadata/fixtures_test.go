package metadata

import "net/netip"

// testInstance is a VM with two NICs (one static dual-stack, one DHCP), two
// keys, user-data and vendor-data: every branch of every renderer.
func testInstance() *Instance {
	return &Instance{
		ID:       "vm-0f3a9c",
		UUID:     "6c1f1a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
		Name:     "web-1",
		Hostname: "web-1",
		Project:  "acme",
		SSHKeys: []SSHKey{
			{Name: "alice", Key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk4Zm9vYmFyYmF6cXV4cXV1eHh4eHh4eHh4eHh4 alice@laptop"},
			{Key: "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= ci"},
		},
		UserData:   []byte("#cloud-config\nruncmd:\n  - echo hello > /run/hello\n"),
		VendorData: []byte("#cloud-config\nmanage_etc_hosts: localhost\n"),
		NICs: []NIC{
			{
				ID:            "port-a1",
				Network:       "net-blue",
				MAC:           "52:54:00:12:34:56",
				Addresses:     []netip.Prefix{netip.MustParsePrefix("10.20.0.5/24"), netip.MustParsePrefix("10.20.0.6/24"), netip.MustParsePrefix("fd00:20::5/64")},
				Gateway4:      netip.MustParseAddr("10.20.0.1"),
				Gateway6:      netip.MustParseAddr("fe80::1"),
				DNS:           []netip.Addr{netip.MustParseAddr("10.20.0.2"), netip.MustParseAddr("fd00:20::2")},
				SearchDomains: []string{"acme.internal"},
				MTU:           1450,
				Routes:        []Route{{To: netip.MustParsePrefix("192.168.0.0/16"), Via: netip.MustParseAddr("10.20.0.254")}},
			},
			{
				ID:      "port-b2",
				Network: "net-green",
				MAC:     "52:54:00:AB:CD:EF",
			},
		},
		InstanceType: "2c-4g",
	}
}

// minimalInstance has only what is required.
func minimalInstance() *Instance {
	return &Instance{
		ID:       "vm-min",
		UUID:     "00000000-0000-4000-8000-000000000001",
		Name:     "min",
		Hostname: "min",
	}
}
