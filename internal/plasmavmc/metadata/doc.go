// Package metadata renders what cloud-init reads about one VM and serves it
// over HTTP the way cloud-init's datasources probe for it.
//
// It owns three renderings of one Instance description:
//
//   - NoCloud: meta-data (YAML), user-data (as given), network-config
//     (version 2 YAML, matched by MAC) and vendor-data, the files of a
//     `cidata` seed (package cidata writes them to an ISO);
//   - EC2: the /latest/ and /2009-04-04/ trees (meta-data listings with
//     trailing slashes for directories, public-keys as `0=NAME`,
//     network/interfaces/macs/..., placement/availability-zone, user-data)
//     and the IMDSv2 session token (PUT /latest/api/token);
//   - OpenStack: /openstack/ with its version list, meta_data.json,
//     network_data.json, user_data, vendor_data.json and vendor_data2.json.
//
// Handler answers those paths for the instance a request belongs to; the
// caller's lookup decides which one that is (plasmavmc's lookup reads the
// X-UltraCloud-* headers that prismnet's metadata proxy sets and a guest
// cannot forge, because the proxy drops any it sends).
//
// The shapes follow what cloud-init 22.4.2 (Debian bookworm's package)
// actually does with them, read from its DataSourceEc2, DataSourceOpenStack,
// DataSourceNoCloud and network_state modules; docs/plasmavmc-metadata.md
// says which behaviour each choice serves.
//
// What it must not do: decide who is asking (identity comes from the lookup
// only; no header, query or path names an instance), keep per-instance
// state (the IMDSv2 token is a MAC over the instance and an expiry, so
// nothing grows and a token from one VM is worthless to another), store or
// change VMs, or build disk images (package cidata does that).
package metadata
