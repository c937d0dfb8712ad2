package cidata

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"github.com/ultracloud/ultracloud/internal/plasmavmc/metadata"
)

func testInstance() *metadata.Instance {
	return &metadata.Instance{
		ID:         "vm-0f3a9c",
		UUID:       "6c1f1a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
		Name:       "web-1",
		Hostname:   "web-1",
		Project:    "acme",
		SSHKeys:    []metadata.SSHKey{{Name: "alice", Key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk4Zm9vYmFy alice@laptop"}},
		UserData:   []byte("#cloud-config\npassword: s3cret\nruncmd:\n  - echo hello\n"),
		VendorData: []byte("#cloud-config\nmanage_etc_hosts: localhost\n"),
		NICs: []metadata.NIC{{
			MAC:       "52:54:00:12:34:56",
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.20.0.5/24")},
			Gateway4:  netip.MustParseAddr("10.20.0.1"),
			DNS:       []netip.Addr{netip.MustParseAddr("10.20.0.2")},
		}},
	}
}

// readISO opens an image with go-diskfs's reader and returns its label and
// every file under it.
func readISO(t *testing.T, path string) (string, map[string][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	fs, err := iso9660.Read(file.New(f, true), st.Size(), 0, 2048)
	if err != nil {
		t.Fatalf("go-diskfs cannot read %s: %v", path, err)
	}
	files := map[string][]byte{}
	err = iofs.WalkDir(fs, ".", func(p string, d iofs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(p)
		files[p] = b
		return err
	})
	if err != nil {
		t.Fatalf("go-diskfs walking %s: %v", path, err)
	}
	return strings.TrimRight(fs.Label(), " \x00"), files
}

func filesOf(img Image) map[string][]byte {
	m := map[string][]byte{}
	for _, f := range img.Files {
		m[f.Path] = f.Data
	}
	return m
}

func sameFiles(t *testing.T, who string, got, want map[string][]byte) {
	t.Helper()
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: %s is missing (have %v)", who, p, slices.Sorted(mapsKeys(got)))
		} else if !bytes.Equal(g, w) {
			t.Errorf("%s: %s is %q, want %q", who, p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected file %s", who, p)
		}
	}
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestNoCloudSeedHoldsTheRenderedDocuments(t *testing.T) {
	inst := testInstance()
	img, err := NoCloud(inst)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := metadata.RenderNoCloud(inst)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{
		"meta-data": nc.MetaData, "user-data": nc.UserData,
		"network-config": nc.NetworkConfig, "vendor-data": nc.VendorData,
	}
	dst := filepath.Join(t.TempDir(), "seed.iso")
	if err := img.WriteFile(dst); err != nil {
		t.Fatal(err)
	}
	label, got := readISO(t, dst)
	if label != LabelNoCloud {
		t.Errorf("label %q, want %q", label, LabelNoCloud)
	}
	sameFiles(t, "go-diskfs", got, want)
}

func TestNoCloudSeedOfAMinimalInstanceStillHasUserData(t *testing.T) {
	img, err := NoCloud(&metadata.Instance{ID: "vm-1", UUID: "00000000-0000-4000-8000-000000000001", Name: "m", Hostname: "m"})
	if err != nil {
		t.Fatal(err)
	}
	got := filesOf(img)
	if _, ok := got["user-data"]; !ok || len(got) != 2 {
		t.Errorf("files %v, want meta-data and an empty user-data (NoCloud requires both)", slices.Sorted(mapsKeys(got)))
	}
	dst := filepath.Join(t.TempDir(), "seed.iso")
	if err := img.WriteFile(dst); err != nil {
		t.Fatal(err)
	}
	_, back := readISO(t, dst)
	sameFiles(t, "go-diskfs", back, got)
}

func TestConfigDriveHoldsTheOpenStackDocuments(t *testing.T) {
	inst := testInstance()
	img, err := ConfigDrive(inst)
	if err != nil {
		t.Fatal(err)
	}
	d, err := metadata.RenderOpenStack(inst)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{
		"openstack/latest/meta_data.json":    d.MetaData,
		"openstack/latest/network_data.json": d.NetworkData,
		"openstack/latest/vendor_data.json":  d.VendorData,
		"openstack/latest/vendor_data2.json": d.VendorData2,
		"openstack/latest/user_data":         d.UserData,
	}
	dst := filepath.Join(t.TempDir(), "config-drive.iso")
	if err := img.WriteFile(dst); err != nil {
		t.Fatal(err)
	}
	label, got := readISO(t, dst)
	if label != LabelConfigDrive {
		t.Errorf("label %q, want %q", label, LabelConfigDrive)
	}
	sameFiles(t, "go-diskfs", got, want)
}

func TestImageIsPrivateAndLeavesNothingBehind(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "seed.iso")
	img, err := NoCloud(testInstance())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte("old image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteFile(dst); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 (user-data may hold secrets)", st.Mode().Perm())
	}
	if label, _ := readISO(t, dst); label != LabelNoCloud {
		t.Errorf("the old file was not replaced: label %q", label)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only seed.iso", names)
	}

	// A failed write leaves the previous image untouched and no debris.
	before, _ := os.ReadFile(dst)
	big := Image{Label: LabelNoCloud, Files: []File{{Path: "user-data", Data: make([]byte, MaxFileBytes+1)}}}
	if err := big.WriteFile(dst); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized image: %v, want ErrTooLarge", err)
	}
	// A failure after staging started: the destination is a directory,
	// so the final rename fails.
	bad := filepath.Join(dir, "adir")
	if err := os.Mkdir(bad, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteFile(bad); err == nil {
		t.Fatal("writing over a non-empty directory succeeded")
	}
	after, _ := os.ReadFile(dst)
	if !bytes.Equal(before, after) {
		t.Error("a failed write changed the existing image")
	}
	ents, _ = os.ReadDir(dir)
	if len(ents) != 2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("after failed writes the directory holds %v, want seed.iso and adir", names)
	}
}

func TestValidateRefusesBadImages(t *testing.T) {
	ok := []File{{Path: "meta-data", Data: []byte("x")}}
	tests := []struct {
		name string
		img  Image
		want error
		msg  string
	}{
		{"no label", Image{Files: ok}, ErrInvalid, "label"},
		{"label too long", Image{Label: strings.Repeat("a", 17), Files: ok}, ErrInvalid, "label"},
		{"label with space", Image{Label: "ci data", Files: ok}, ErrInvalid, "label"},
		{"no files", Image{Label: "cidata"}, ErrInvalid, "0 files"},
		{"absolute path", Image{Label: "cidata", Files: []File{{Path: "/meta-data"}}}, ErrInvalid, "clean relative"},
		{"dotdot", Image{Label: "cidata", Files: []File{{Path: "../x"}}}, ErrInvalid, `component ".."`},
		{"unclean", Image{Label: "cidata", Files: []File{{Path: "a//b"}}}, ErrInvalid, "clean relative"},
		{"odd character", Image{Label: "cidata", Files: []File{{Path: "a b"}}}, ErrInvalid, "component"},
		{"too deep", Image{Label: "cidata", Files: []File{{Path: "a/b/c/d/e/f/g/h"}}}, ErrInvalid, "deeper"},
		{"duplicate", Image{Label: "cidata", Files: []File{{Path: "a"}, {Path: "a"}}}, ErrInvalid, "twice"},
		{"file and dir", Image{Label: "cidata", Files: []File{{Path: "a"}, {Path: "a/b"}}}, ErrInvalid, "file and a directory"},
		{"dir and file", Image{Label: "cidata", Files: []File{{Path: "a/b"}, {Path: "a"}}}, ErrInvalid, "twice"},
		{"file too big", Image{Label: "cidata", Files: []File{{Path: "user-data", Data: make([]byte, MaxFileBytes+1)}}}, ErrTooLarge, "user-data is 1048577 bytes"},
		{"image too big", Image{Label: "cidata", Files: []File{
			{Path: "a", Data: make([]byte, MaxFileBytes)}, {Path: "b", Data: make([]byte, MaxFileBytes)},
			{Path: "c", Data: make([]byte, MaxFileBytes)}, {Path: "d", Data: make([]byte, MaxFileBytes)},
			{Path: "e", Data: []byte("x")},
		}}, ErrTooLarge, "add up to"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.img.Validate()
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Validate() = %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			dst := filepath.Join(t.TempDir(), "x.iso")
			if err := tc.img.WriteFile(dst); !errors.Is(err, tc.want) {
				t.Errorf("WriteFile() = %v", err)
			}
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Errorf("a refused image was written: %v", err)
			}
		})
	}
	bad := testInstance()
	bad.Hostname = "no spaces allowed"
	if _, err := NoCloud(bad); !errors.Is(err, metadata.ErrInvalid) {
		t.Errorf("NoCloud of an invalid instance: %v", err)
	}
	if _, err := ConfigDrive(bad); !errors.Is(err, metadata.ErrInvalid) {
		t.Errorf("ConfigDrive of an invalid instance: %v", err)
	}
}

// TestConcurrentWritesAreIndependent: the agent may build seeds for
// several VMs at once (run with -race).
func TestConcurrentWritesAreIndependent(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst := testInstance()
			inst.ID = fmt.Sprintf("vm-%d", i)
			img, err := NoCloud(inst)
			if err == nil {
				err = img.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d.iso", i)))
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		_, files := readISO(t, filepath.Join(dir, fmt.Sprintf("seed-%d.iso", i)))
		if !bytes.Contains(files["meta-data"], []byte(fmt.Sprintf(`"vm-%d"`, i))) {
			t.Errorf("seed %d has meta-data %q", i, files["meta-data"])
		}
	}
}

// --- other tools read the images too ---

func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed; install it with `apt-get install -y %s`", name, pkg)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func writeBoth(t *testing.T) (seed, drive string, nocloud, configdrive Image) {
	t.Helper()
	dir := t.TempDir()
	var err error
	if nocloud, err = NoCloud(testInstance()); err != nil {
		t.Fatal(err)
	}
	if configdrive, err = ConfigDrive(testInstance()); err != nil {
		t.Fatal(err)
	}
	seed, drive = filepath.Join(dir, "seed.iso"), filepath.Join(dir, "drive.iso")
	if err := nocloud.WriteFile(seed); err != nil {
		t.Fatal(err)
	}
	if err := configdrive.WriteFile(drive); err != nil {
		t.Fatal(err)
	}
	return seed, drive, nocloud, configdrive
}

// TestBlkidReadsTheLabels: cloud-init finds its seed with blkid
// (LABEL=cidata / LABEL=config-2, TYPE=iso9660).
func TestBlkidReadsTheLabels(t *testing.T) {
	blkid := requireTool(t, "blkid", "util-linux")
	seed, drive, _, _ := writeBoth(t)
	for path, label := range map[string]string{seed: LabelNoCloud, drive: LabelConfigDrive} {
		out := run(t, blkid, "-p", "-o", "export", path)
		if !strings.Contains(out, "\nLABEL="+label+"\n") || !strings.Contains(out, "\nTYPE=iso9660\n") {
			t.Errorf("blkid %s:\n%s\nwant LABEL=%s and TYPE=iso9660", filepath.Base(path), out, label)
		}
	}
}

// TestXorrisoExtractsTheSameFiles: libisofs (xorriso's reader) sees the
// same names (Rock Ridge) and bytes.
func TestXorrisoExtractsTheSameFiles(t *testing.T) {
	xorriso := requireTool(t, "xorriso", "xorriso")
	seed, drive, nocloud, configdrive := writeBoth(t)
	for path, img := range map[string]Image{seed: nocloud, drive: configdrive} {
		out := run(t, xorriso, "-indev", path, "-find", "/", "-type", "f")
		for _, f := range img.Files {
			if !strings.Contains(out, "'/"+f.Path+"'") {
				t.Errorf("xorriso -find on %s does not list /%s:\n%s", filepath.Base(path), f.Path, out)
			}
		}
		dir := filepath.Join(t.TempDir(), "x")
		run(t, xorriso, "-osirrox", "on", "-indev", path, "-extract", "/", dir)
		got := map[string][]byte{}
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			b, err := os.ReadFile(p)
			got[filepath.ToSlash(rel)] = b
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		sameFiles(t, "xorriso "+filepath.Base(path), got, filesOf(img))
	}
}

// TestIsoinfoSeesRockRidgeAndJolietNames: isoinfo (genisoimage) lists the
// real names through Rock Ridge in both images and through Joliet in the
// flat NoCloud one; files are recorded 0400 (root-only in the guest).
func TestIsoinfoSeesRockRidgeAndJolietNames(t *testing.T) {
	isoinfo := requireTool(t, "isoinfo", "genisoimage")
	seed, drive, nocloud, configdrive := writeBoth(t)
	check := func(mode, path string, img Image) {
		out := run(t, isoinfo, mode, "-f", "-i", path)
		for _, f := range img.Files {
			if !strings.Contains(out, "/"+f.Path+"\n") {
				t.Errorf("isoinfo %s -f on %s lacks /%s:\n%s", mode, filepath.Base(path), f.Path, out)
			}
		}
	}
	check("-R", seed, nocloud)
	check("-J", seed, nocloud)
	check("-R", drive, configdrive)
	if d := run(t, isoinfo, "-d", "-i", drive); !strings.Contains(d, "NO Joliet present") {
		t.Errorf("the config drive has a Joliet tree (go-diskfs writes nested ones wrong):\n%s", d)
	}
	d := run(t, isoinfo, "-d", "-i", seed)
	if !strings.Contains(d, "Volume id: cidata") || !strings.Contains(d, "Rock Ridge signatures") {
		t.Errorf("isoinfo -d:\n%s", d)
	}
	l := run(t, isoinfo, "-R", "-l", "-i", seed)
	if !strings.Contains(l, "-r--------") || strings.Contains(l, "-rw-r--r--") {
		t.Errorf("file modes are not 0400:\n%s", l)
	}
}

// TestGoDiskfsNestedJolietIsStillBroken pins the reason WriteFile leaves
// Joliet out of layouts with directories: go-diskfs v1.9.4 writes Joliet
// subdirectory records pointing at the primary tree, so Joliet readers see
// 8.3 names below the root. When this test fails, go-diskfs has fixed it
// and Image.flat can go.
func TestGoDiskfsNestedJolietIsStillBroken(t *testing.T) {
	isoinfo := requireTool(t, "isoinfo", "genisoimage")
	dir := t.TempDir()
	stage := filepath.Join(dir, "stage")
	if err := stageFiles(stage, []File{{Path: "openstack/latest/meta_data.json", Data: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "j.iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fs, err := iso9660.Create(file.New(f, false), 0, 0, 2048, stage)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Finalize(iso9660.FinalizeOptions{RockRidge: true, Joliet: true, VolumeIdentifier: "t"}); err != nil {
		t.Fatal(err)
	}
	out := run(t, isoinfo, "-J", "-f", "-i", f.Name())
	if strings.Contains(out, "/openstack/latest/meta_data.json") {
		t.Errorf("go-diskfs now writes nested Joliet names right:\n%s\nenable Joliet for every layout (drop Image.flat)", out)
	}
}
