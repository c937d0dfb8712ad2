// Package dnsname checks the host and domain names prismnet hands to
// workloads (a DHCP lease's hostname and search list, a router
// advertisement's DNSSL), so that the DHCP server and the RA sender refuse
// the same names with the same words.
//
// It only checks names: it never resolves them, changes their case or
// encodes them for the wire (each protocol package does its own encoding).
package dnsname

import (
	"errors"
	"fmt"
	"strings"
)

// Check accepts host names and domain names made of letters, digits and
// hyphens (RFC 1123), with an optional trailing dot: 1..253 characters
// without the dot, dot-separated labels of 1..63 characters that neither
// start nor end with a hyphen.
//
// The error says what is wrong with the name but not which name it is:
// callers put it after the field and the value they checked.
func Check(name string) error {
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		return errors.New("empty name")
	}
	if len(n) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %q must be 1..63 characters", label)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("label %q has %q (letters, digits and hyphens only)", label, c)
			}
		}
	}
	return nil
}
