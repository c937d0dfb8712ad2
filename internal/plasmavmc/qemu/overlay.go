package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Overlay creates a qcow2 copy-on-write overlay at path on top of the
// cached base image base (of format baseFormat, raw or qcow2): the VM
// writes only to its overlay, and many VMs share one base. sizeBytes
// grows the overlay's virtual size beyond the base's; 0 keeps the base's.
//
// The base's format is given, never probed (a raw image whose content
// looks like a qcow2 header could otherwise name any host file as its
// backing file). The base is referenced by absolute path and must not
// change while overlays use it. An existing path is refused rather than
// overwritten: it could be a VM's disk.
func (h *Host) Overlay(ctx context.Context, base, baseFormat, path string, sizeBytes int64) error {
	if !filepath.IsAbs(base) || !filepath.IsAbs(path) {
		return fmt.Errorf("%w: overlay: base %q and path %q must be absolute", ErrInvalidSpec, base, path)
	}
	if baseFormat != "raw" && baseFormat != "qcow2" {
		return fmt.Errorf("%w: overlay: base format %q: want raw or qcow2", ErrInvalidSpec, baseFormat)
	}
	if sizeBytes < 0 {
		return fmt.Errorf("%w: overlay: size %d is negative", ErrInvalidSpec, sizeBytes)
	}
	if _, err := os.Stat(base); err != nil {
		return fmt.Errorf("qemu: overlay: base image: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("qemu: overlay: %s: %w", path, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("qemu: overlay: %w", err)
	}
	img := h.QEMUImg
	if img == "" {
		img = "qemu-img"
	}
	args := []string{"create", "-q", "-f", "qcow2", "-b", base, "-F", baseFormat, path}
	if sizeBytes > 0 {
		args = append(args, strconv.FormatInt(sizeBytes, 10))
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, img, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu: overlay: %s %v: %w: %s", img, args, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
