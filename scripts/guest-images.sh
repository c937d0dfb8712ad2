#!/usr/bin/env bash
# Builds UltraCloud's guest images from Debian packages into
# $ULTRACLOUD_CACHE/guests (default ~/.cache/ultracloud/guests), reusing
# what is there. Today: the tiny guest, Debian's cloud kernel and a busybox
# initramfs (scripts/guest/tiny-init). Prints the files it made.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
apt_need busybox-static
guest_assets
out=${ULTRACLOUD_CACHE:-$HOME/.cache/ultracloud}/guests/tiny
stamp=$(cat scripts/guest/tiny-init scripts/guest/dhcp-apply "$ULTRACLOUD_GUEST_KERNEL" /bin/busybox | sha256sum | cut -c1-16)
if [ ! -f "$out/$stamp.done" ]; then
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	mkdir -p "$work/bin" "$work/lib/modules" "$work/proc" "$work/sys" "$work/dev"
	cp /bin/busybox "$work/bin/busybox"
	install -m 0755 scripts/guest/tiny-init "$work/init"
	install -m 0755 scripts/guest/dhcp-apply "$work/bin/dhcp-apply"
	# The virtio drivers are modules of the cloud kernel, in load order
	# (dependencies first; the package ships no modules.dep).
	order="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net virtio-rng button evdev"
	for m in $order; do
		f=$(find "$ULTRACLOUD_GUEST_MODULES" -name "$m.ko" | head -1)
		[ -n "$f" ] || { echo "error: module $m.ko not in $ULTRACLOUD_GUEST_MODULES" >&2; exit 1; }
		cp "$f" "$work/lib/modules/$m.ko"
	done
	echo "$order" | tr ' ' '\n' > "$work/lib/modules/order"
	mkdir -p "$out"
	(cd "$work" && find . | sed 's|^\./||' | grep -v '^\.$' | busybox cpio -o -H newc 2>/dev/null) > "$out/initramfs.cpio.part"
	mv "$out/initramfs.cpio.part" "$out/initramfs.cpio"
	cp "$ULTRACLOUD_GUEST_KERNEL" "$out/vmlinuz"
	rm -f "$out"/*.done
	touch "$out/$stamp.done"
fi
echo "$out/vmlinuz"
echo "$out/initramfs.cpio"
