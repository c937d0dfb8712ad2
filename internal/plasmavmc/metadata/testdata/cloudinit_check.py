#!/usr/bin/python3
"""Feed UltraCloud's metadata to the installed cloud-init and print, as JSON,
what its datasources made of it.

Run by cloudinit_test.go with Debian's /usr/bin/python3 and the cloud-init
package (22.4.2 on bookworm). Arguments:

    WORKDIR      scratch directory (one cloud_dir per datasource below it)
    NOCLOUD_DIR  a NoCloud seed directory (meta-data, user-data, ...)
    CONFIGDRIVE  a config drive tree (openstack/latest/...)
    BASE_URL     the metadata service (Handler) on loopback
    MACS         JSON object mapping guest MACs to interface names

Only the host-facing edges are replaced: the list of local interfaces (the
guest's, given in MACS), DMI reads (the guest's SMBIOS is not ours to
read here) and the hard-coded 169.254.169.254 that the OpenStack reader
uses for its EC2 side-read. Every parser, crawler and renderer is
cloud-init's own.
"""

import json
import logging
import os
import shutil
import sys

from cloudinit import distros, helpers, net
from cloudinit.net import network_state, networkd
from cloudinit.sources import (
    DataSourceConfigDrive,
    DataSourceEc2,
    DataSourceNoCloud,
    DataSourceOpenStack,
)
from cloudinit.sources.helpers import ec2 as ec2_helper
from cloudinit.sources.helpers import openstack as os_helper

workdir, nocloud_dir, configdrive_dir, base_url, macs_json = sys.argv[1:6]
MACS = json.loads(macs_json)

logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)


def interfaces_by_mac(*_args, **_kwargs):
    return dict(MACS)


def interface_name_from_mac(mac):
    return MACS.get(mac.lower())


net.get_interfaces_by_mac = interfaces_by_mac
net.find_interface_name_from_mac = interface_name_from_mac
network_state.get_interfaces_by_mac = interfaces_by_mac
network_state.find_interface_name_from_mac = interface_name_from_mac
net.find_fallback_nic = lambda *a, **k: sorted(MACS.values())[0]
DataSourceNoCloud.dmi.read_dmi_data = lambda key: None
DataSourceOpenStack.detect_openstack = lambda accept_oracle=False: True
DataSourceEc2.identify_platform = lambda: DataSourceEc2.CloudNames.UNKNOWN
os_helper.MetadataReader._read_ec2_metadata = (
    lambda self: ec2_helper.get_instance_metadata(
        metadata_address=base_url, timeout=self.timeout, retries=self.retries
    )
)

SYS_CFG = {
    "datasource_list": ["NoCloud", "ConfigDrive", "OpenStack", "Ec2", "None"],
    "datasource": {
        "OpenStack": {
            "metadata_urls": [base_url],
            "max_wait": 10,
            "timeout": 5,
            "retries": 0,
        },
        "Ec2": {"metadata_urls": [base_url], "max_wait": 10, "timeout": 5},
    },
}


def make_paths(name):
    root = os.path.join(workdir, name)
    paths = helpers.Paths(
        {
            "cloud_dir": os.path.join(root, "cloud"),
            "run_dir": os.path.join(root, "run"),
        }
    )
    os.makedirs(paths.seed_dir, exist_ok=True)
    distro = distros.fetch("debian")("debian", {}, paths)
    return paths, distro


def text(v):
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode()
    return v


def render(netcfg, name):
    """Parse netcfg as cloud-init does and render it with the networkd
    renderer (what a minimal bookworm image without ifupdown or netplan
    uses)."""
    if netcfg is None:
        return None
    ns = network_state.parse_net_config_data(netcfg)
    target = os.path.join(workdir, name, "target")
    networkd.Renderer({}).render_network_state(ns, target=target)
    netdir = os.path.join(target, "etc/systemd/network")
    files = {}
    for fn in sorted(os.listdir(netdir)):
        with open(os.path.join(netdir, fn)) as f:
            files[fn] = f.read()
    ifaces = []
    for i in ns.iter_interfaces():
        ifaces.append(
            {
                "name": i.get("name"),
                "mac": i.get("mac_address"),
                "mtu": i.get("mtu"),
                "subnets": i.get("subnets"),
            }
        )
    return {
        "config": netcfg,
        "interfaces": ifaces,
        "dns": ns.dns_nameservers,
        "networkd": files,
    }


def summarize(ds, name):
    return {
        "dsname": ds.dsname,
        "instance_id": ds.get_instance_id(),
        "hostname": ds.get_hostname().hostname,
        "public_keys": ds.get_public_ssh_keys(),
        "userdata": text(ds.get_userdata_raw()),
        "vendordata": text(ds.get_vendordata_raw()),
        "availability_zone": ds.availability_zone,
        "network": render(ds.network_config, name),
    }


def run(name, cls, seed=None):
    paths, distro = make_paths(name)
    if seed is not None:
        src, sub = seed
        shutil.copytree(src, os.path.join(paths.seed_dir, sub))
    ds = cls(SYS_CFG, distro, paths)
    if not ds.get_data():
        return {"error": "%s found no data" % name}
    return summarize(ds, name)


out = {
    "nocloud": run(
        "nocloud", DataSourceNoCloud.DataSourceNoCloud, (nocloud_dir, "nocloud")
    ),
    "configdrive": run(
        "configdrive",
        DataSourceConfigDrive.DataSourceConfigDrive,
        (configdrive_dir, "config_drive"),
    ),
    "openstack": run("openstack", DataSourceOpenStack.DataSourceOpenStack),
    "ec2": run("ec2", DataSourceEc2.DataSourceEc2),
}
json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
