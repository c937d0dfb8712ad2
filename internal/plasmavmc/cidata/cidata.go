// Package cidata writes cloud-init seed images: an ISO 9660 volume (with
// Rock Ridge, and Joliet for flat layouts, so readers see the real file
// names, not 8.3 ones) that
// QEMU attaches to a VM as a plain read-only disk, where cloud-init finds it
// by its volume label.
//
// Two layouts: NoCloud (label `cidata`: meta-data, user-data,
// network-config, vendor-data at the root) and OpenStack's config drive v2
// (label `config-2`: openstack/latest/meta_data.json, network_data.json,
// vendor_data.json, vendor_data2.json, user_data). The documents come from
// package metadata, byte for byte the ones the metadata service serves.
//
// It owns the image format, its limits and writing it safely: the image
// appears at its path complete or not at all (written to a temporary file
// in the same directory, synced, renamed), with mode 0600 because
// user-data may hold secrets; the staging directory it builds from is
// private (0700) and removed on every path.
//
// What it must not do: decide what goes into the documents (package
// metadata does), choose where images live or when they are rebuilt (the
// plasmavmc agent does), or attach them to VMs.
package cidata

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"github.com/ultracloud/ultracloud/internal/plasmavmc/metadata"
)

// Volume labels cloud-init looks for (it accepts either case for NoCloud).
const (
	LabelNoCloud     = "cidata"
	LabelConfigDrive = "config-2"
)

// Limits on what an image may hold. A seed carries a few KiB in practice;
// user-data, the only large part, is capped at metadata.MaxUserDataBytes
// before it gets here. These bounds keep a bad caller from filling the
// host's disk.
const (
	MaxFileBytes  = 1 << 20
	MaxImageBytes = 4 << 20
	MaxFiles      = 64
	// maxDepth is ISO 9660's directory depth limit (deeper trees need
	// Rock Ridge relocation, which nothing here needs).
	maxDepth = 7
	// maxLabel is the Joliet volume identifier's length in characters.
	maxLabel = 16
)

// ErrInvalid marks an image description that cannot be written; the
// wrapped message names the file or label. ErrTooLarge marks one over a
// limit.
var (
	ErrInvalid  = errors.New("cidata: invalid image")
	ErrTooLarge = errors.New("cidata: image too large")
)

// File is one file of an image; Path is relative, slash-separated.
type File struct {
	Path string
	Data []byte
}

// Image is a volume label and the files under it.
type Image struct {
	Label string
	Files []File
}

// NoCloud is in's NoCloud seed. user-data is always present (NoCloud
// requires the file; empty means none); network-config only with NICs;
// vendor-data only when given.
func NoCloud(in *metadata.Instance) (Image, error) {
	d, err := metadata.RenderNoCloud(in)
	if err != nil {
		return Image{}, fmt.Errorf("cidata: %w", err)
	}
	img := Image{Label: LabelNoCloud, Files: []File{
		{Path: "meta-data", Data: d.MetaData},
		{Path: "user-data", Data: d.UserData},
	}}
	if d.NetworkConfig != nil {
		img.Files = append(img.Files, File{Path: "network-config", Data: d.NetworkConfig})
	}
	if d.VendorData != nil {
		img.Files = append(img.Files, File{Path: "vendor-data", Data: d.VendorData})
	}
	return img, nil
}

// ConfigDrive is in's OpenStack config drive (version 2), for guests whose
// cloud-init is set up for ConfigDrive rather than NoCloud.
func ConfigDrive(in *metadata.Instance) (Image, error) {
	d, err := metadata.RenderOpenStack(in)
	if err != nil {
		return Image{}, fmt.Errorf("cidata: %w", err)
	}
	const dir = "openstack/latest/"
	img := Image{Label: LabelConfigDrive, Files: []File{
		{Path: dir + "meta_data.json", Data: d.MetaData},
		{Path: dir + "network_data.json", Data: d.NetworkData},
		{Path: dir + "vendor_data.json", Data: d.VendorData},
		{Path: dir + "vendor_data2.json", Data: d.VendorData2},
	}}
	if d.UserData != nil {
		img.Files = append(img.Files, File{Path: dir + "user_data", Data: d.UserData})
	}
	return img, nil
}

// Validate checks the label, the paths and the limits.
func (img Image) Validate() error {
	if err := checkName(img.Label, maxLabel); err != nil {
		return fmt.Errorf("%w: label %q: %w", ErrInvalid, img.Label, err)
	}
	if len(img.Files) == 0 || len(img.Files) > MaxFiles {
		return fmt.Errorf("%w: %d files; an image holds 1-%d", ErrInvalid, len(img.Files), MaxFiles)
	}
	files := map[string]bool{}
	dirs := map[string]bool{}
	total := 0
	for _, f := range img.Files {
		if f.Path == "" || path.Clean(f.Path) != f.Path || strings.HasPrefix(f.Path, "/") {
			return fmt.Errorf("%w: path %q is not a clean relative path", ErrInvalid, f.Path)
		}
		parts := strings.Split(f.Path, "/")
		if len(parts) > maxDepth {
			return fmt.Errorf("%w: path %q is deeper than %d levels", ErrInvalid, f.Path, maxDepth)
		}
		for _, p := range parts {
			if err := checkName(p, 64); err != nil || p == "." || p == ".." {
				return fmt.Errorf("%w: path %q: component %q is not a plain name of letters, digits and . _ -", ErrInvalid, f.Path, p)
			}
		}
		if files[f.Path] || dirs[f.Path] {
			return fmt.Errorf("%w: path %q is given twice (or is also a directory)", ErrInvalid, f.Path)
		}
		files[f.Path] = true
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/")
			if files[d] {
				return fmt.Errorf("%w: %q is a file and a directory", ErrInvalid, d)
			}
			dirs[d] = true
		}
		if len(f.Data) > MaxFileBytes {
			return fmt.Errorf("%w: %s is %d bytes, over the limit of %d per file", ErrTooLarge, f.Path, len(f.Data), MaxFileBytes)
		}
		total += len(f.Data)
	}
	if total > MaxImageBytes {
		return fmt.Errorf("%w: the files add up to %d bytes, over the limit of %d", ErrTooLarge, total, MaxImageBytes)
	}
	return nil
}

func checkName(s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("must be 1-%d characters", max)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("has %q; only letters, digits and . _ - are allowed", r)
		}
	}
	return nil
}

// WriteFile writes the image to dst atomically with mode 0600: a reader of
// dst sees the previous image or the new one, never a partial one. The
// temporary file and the staging directory live next to dst (so the
// rename stays on one filesystem and the staged user-data in dst's
// directory, which the caller keeps private) and are removed on failure.
func (img Image) WriteFile(dst string) (err error) {
	if err := img.Validate(); err != nil {
		return err
	}
	dir := filepath.Dir(dst)
	stage, err := os.MkdirTemp(dir, ".cidata-stage-")
	if err != nil {
		return fmt.Errorf("cidata: staging directory: %w", err)
	}
	defer os.RemoveAll(stage) // Finalize removes it on success; this covers failures
	if err := stageFiles(stage, img.Files); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".cidata-*.iso.tmp") // created 0600
	if err != nil {
		return fmt.Errorf("cidata: temporary image: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	fs, err := iso9660.Create(file.New(tmp, false), 0, 0, 2048, stage)
	if err != nil {
		return fmt.Errorf("cidata: create iso9660: %w", err)
	}
	opts := iso9660.FinalizeOptions{RockRidge: true, Joliet: img.flat(), VolumeIdentifier: img.Label}
	if err := fs.Finalize(opts); err != nil {
		return fmt.Errorf("cidata: write iso9660: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("cidata: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("cidata: sync image: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cidata: close image: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("cidata: %w", err)
	}
	// Make the rename durable; a failure here leaves a complete image.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// flat reports whether every file is at the root. Joliet is written only
// then: go-diskfs v1.9.4 points a Joliet directory's subdirectory records
// at the primary tree's extents, so a Joliet reader below the root sees
// 8.3 names ("LATEST", "META_DAT.JSO;1"). Rock Ridge, which Linux prefers
// when both are present, is right at every depth; Joliet matters for
// readers without Rock Ridge (Windows), and for the flat NoCloud layout it
// is right.
func (img Image) flat() bool {
	for _, f := range img.Files {
		if strings.Contains(f.Path, "/") {
			return false
		}
	}
	return true
}

// stageFiles lays the files out under stage: files 0400 and directories
// 0700, the modes Rock Ridge then records in the image (the guest's
// cloud-init reads them as root).
func stageFiles(stage string, files []File) error {
	for _, f := range files {
		p := filepath.Join(stage, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("cidata: stage %s: %w", f.Path, err)
		}
		if err := os.WriteFile(p, f.Data, 0o400); err != nil {
			return fmt.Errorf("cidata: stage %s: %w", f.Path, err)
		}
	}
	return nil
}
