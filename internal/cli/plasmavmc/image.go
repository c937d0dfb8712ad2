package plasmavmc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

var imageCols = []clikit.Column[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus]{
	{Head: "FORMAT", Value: func(o image) string { return o.Spec.Format }},
	{Head: "PHASE", Value: func(o image) string { return o.Status.Phase }},
	{Head: "SIZE", Value: func(o image) string {
		if o.Status.Size == 0 && len(o.Status.Parts) == 0 {
			return ""
		}
		return clikit.HumanBytes(o.Status.Size)
	}},
	{Head: "DESCRIPTION", Value: func(o image) string { return o.Spec.Description }},
}

func parseFormat(flag, s string) (string, error) {
	switch strings.ToLower(s) {
	case plasmavmcv1.FormatKernel, plasmavmcv1.FormatRaw, plasmavmcv1.FormatQcow2:
		return strings.ToLower(s), nil
	case "":
		return "", fmt.Errorf("%s is required: kernel (a kernel and an initrd), raw or qcow2 (a disk)", flag)
	}
	return "", fmt.Errorf("%s: %q: use kernel (a kernel and an initrd), raw or qcow2 (a disk)", flag, s)
}

// imageSpecFlags are the flags that make a new image.
type imageSpecFlags struct {
	format, cmdline, description string
}

func (f *imageSpecFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.format, "format", "", "kernel (a kernel and an initrd, booted directly), raw or qcow2 (a boot disk)")
	cmd.Flags().StringVar(&f.cmdline, "cmdline", "", "kernel command line of a kernel image, e.g. \"console=ttyS0\"")
	cmd.Flags().StringVar(&f.description, "description", "", "what the image is")
}

func (f *imageSpecFlags) spec() (plasmavmcv1.ImageSpec, error) {
	format, err := parseFormat("--format", f.format)
	if err != nil {
		return plasmavmcv1.ImageSpec{}, err
	}
	if f.cmdline != "" && format != plasmavmcv1.FormatKernel {
		return plasmavmcv1.ImageSpec{}, fmt.Errorf("--cmdline is for kernel images; a %s image boots from its disk", format)
	}
	return plasmavmcv1.ImageSpec{Format: format, Cmdline: f.cmdline, Description: f.description}, nil
}

func newImageCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images", "img"},
		Short:   "Guest images: create, upload, list, describe, delete",
		Long: `An image is what a VM of the project boots: a kernel and an initrd (format
kernel, booted directly), or a raw or qcow2 boot disk (each VM gets a
copy-on-write overlay of it). Create it, then upload its parts; it is Ready
once every part is there. ` + "`image upload --format`" + ` does both.`,
	}
	var sf imageSpecFlags
	var out string
	create := &cobra.Command{
		Use:   "create NAME --format kernel|raw|qcow2 [--cmdline TEXT] [--description TEXT]",
		Short: "Create an image (then upload its data with image upload)",
		Example: `  ultracloud image create tiny --format kernel --cmdline "console=ttyS0 quiet"
  ultracloud image create bookworm --format qcow2 --description "Debian 12 with cloud-init"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.KindCreateRun(cmd, cf, out, images, args[0], sf.spec)
		},
	}
	sf.register(create)
	clikit.OutputFlag(create, &out)

	cmd.AddCommand(create, newImageUploadCmd(cf), clikit.KindListCmd(cf, images, "images", imageCols, nil), clikit.KindGetCmd(cf, images, imageCols),
		clikit.KindDescribeCmd(cf, images, imageUsers, describeImage), clikit.KindDeleteCmd(cf, images))
	return cmd
}

// upload is one part to send.
type upload struct {
	part, path string
	size       int64
}

func newImageUploadCmd(cf *clikit.ClientFlags) *cobra.Command {
	var sf imageSpecFlags
	var kernel, initrd, out string
	cmd := &cobra.Command{
		Use:   "upload NAME (FILE | --kernel FILE --initrd FILE) [--format kernel|raw|qcow2 [--cmdline TEXT] [--description TEXT]]",
		Short: "Upload an image's data: a disk FILE, or a kernel and an initrd (creating the image with --format)",
		Long: `Upload an image's parts, streamed, with the progress on stderr. With --format
the image is created first if it does not exist. Each part's SHA-256 is
printed and checked against the digest the server computed.`,
		Example: `  ultracloud image upload tiny --format kernel --cmdline console=ttyS0 --kernel vmlinuz --initrd initrd.img
  ultracloud image upload bookworm bookworm.qcow2 --format qcow2`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := clikit.ParseOutput(out)
			if err != nil {
				return err
			}
			name := args[0]
			var parts []upload
			switch {
			case len(args) == 2 && (kernel != "" || initrd != ""):
				return errors.New("give a disk FILE or --kernel and --initrd, not both")
			case len(args) == 2:
				parts = []upload{{part: plasmavmcv1.PartDisk, path: args[1]}}
			case kernel != "" || initrd != "":
				if kernel != "" {
					parts = append(parts, upload{part: plasmavmcv1.PartKernel, path: kernel})
				}
				if initrd != "" {
					parts = append(parts, upload{part: plasmavmcv1.PartInitrd, path: initrd})
				}
			default:
				return errors.New("nothing to upload: give a disk FILE (raw, qcow2) or --kernel FILE and --initrd FILE (kernel)")
			}
			var newSpec *plasmavmcv1.ImageSpec
			if sf.format != "" {
				s, err := sf.spec()
				if err != nil {
					return err
				}
				newSpec = &s
				if err := partsFit(name, s.Format, parts); err != nil {
					return err
				}
			} else if sf.cmdline != "" || sf.description != "" {
				return errors.New("--cmdline and --description describe a new image: give --format too")
			}
			for i := range parts {
				fi, err := os.Stat(parts[i].path)
				if err != nil {
					return fmt.Errorf("%s: %w", partFlag(parts[i].part), err)
				}
				if !fi.Mode().IsRegular() {
					return fmt.Errorf("%s: %s is not a regular file", partFlag(parts[i].part), parts[i].path)
				}
				parts[i].size = fi.Size()
			}
			return uploadImage(cmd, cf, f, name, newSpec, parts)
		},
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&kernel, "kernel", "", "kernel FILE of a kernel image")
	cmd.Flags().StringVar(&initrd, "initrd", "", "initrd FILE of a kernel image")
	clikit.OutputFlag(cmd, &out)
	return cmd
}

func partFlag(part string) string {
	if part == plasmavmcv1.PartDisk {
		return "FILE"
	}
	return "--" + part
}

// partsFit checks that the parts are what an image of format has.
func partsFit(name, format string, parts []upload) error {
	for _, p := range parts {
		if (p.part == plasmavmcv1.PartDisk) != (format != plasmavmcv1.FormatKernel) {
			if format == plasmavmcv1.FormatKernel {
				return fmt.Errorf("%s is a kernel image: upload --kernel FILE and --initrd FILE", images.Ref(name))
			}
			return fmt.Errorf("%s is a %s image: upload its disk as FILE, not --kernel or --initrd", images.Ref(name), format)
		}
	}
	return nil
}

func uploadImage(cmd *cobra.Command, cf *clikit.ClientFlags, f clikit.Format, name string, newSpec *plasmavmcv1.ImageSpec, parts []upload) error {
	ctx := cmd.Context()
	env := cf.Env()
	out := cmd.OutOrStdout()
	c, err := cf.Connect()
	if err != nil {
		return err
	}
	rs, err := images.Handle(ctx, c, false)
	if err != nil {
		return err
	}
	raw, err := rs.Get(ctx, name)
	switch {
	case client.IsNotFound(err) && newSpec != nil:
		if raw, err = images.Create(ctx, c, name, *newSpec); err != nil {
			return err
		}
		if f == clikit.FormatTable {
			if err := clikit.PrintCreated(out, f, images.Created(raw)); err != nil {
				return err
			}
		}
	case client.IsNotFound(err):
		return fmt.Errorf("%s: %w (create it with `ultracloud image create %s --format ...`, or pass --format)", images.Ref(name), err, name)
	case err != nil:
		return fmt.Errorf("%s: %w", images.Ref(name), err)
	}
	img, err := clikit.Decode[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus](images, raw)
	if err != nil {
		return err
	}
	if newSpec != nil && newSpec.Format != img.Spec.Format {
		return fmt.Errorf("%s exists as a %s image, not %s", images.Ref(name), img.Spec.Format, newSpec.Format)
	}
	if err := partsFit(name, img.Spec.Format, parts); err != nil {
		return err
	}
	r, err := openRaw(cf)
	if err != nil {
		return err
	}
	defer r.close()
	live := isTerminal(env.Stderr)
	for _, p := range parts {
		o, sum, err := uploadPart(ctx, r, c.Config.Project, name, p, env.Stderr, live)
		if err != nil {
			return err
		}
		raw = o
		got, err := clikit.Decode[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus](images, o)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(got.Status.Parts, func(x plasmavmcv1.ImagePart) bool { return x.Name == p.part })
		if i < 0 {
			return fmt.Errorf("%s: the server's answer lists no %s part after its upload", images.Ref(name), p.part)
		}
		server := got.Status.Parts[i]
		if server.SHA256 != sum || server.Size != p.size {
			return fmt.Errorf("%s: %s: the server stored %d bytes with sha256 %s, but %s has %d bytes with sha256 %s: upload it again",
				images.Ref(name), p.part, server.Size, server.SHA256, p.path, p.size, sum)
		}
		if f == clikit.FormatTable {
			fmt.Fprintf(out, "%s %s: %s, sha256 %s (the server's digest matches)\n", images.Ref(name), p.part, clikit.HumanBytes(p.size), sum)
		}
	}
	final, err := clikit.Decode[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus](images, raw)
	if err != nil {
		return err
	}
	if f != clikit.FormatTable {
		return clikit.PrintData(out, f, raw)
	}
	if final.Status.Phase == "Ready" {
		_, err = fmt.Fprintf(out, "%s is Ready (%s)\n", images.Ref(name), clikit.HumanBytes(final.Status.Size))
		return err
	}
	var missing []string
	for _, want := range []string{plasmavmcv1.PartKernel, plasmavmcv1.PartInitrd} {
		if final.Spec.Format == plasmavmcv1.FormatKernel && !slices.ContainsFunc(final.Status.Parts, func(x plasmavmcv1.ImagePart) bool { return x.Name == want }) {
			missing = append(missing, "--"+want)
		}
	}
	_, err = fmt.Fprintf(out, "%s is %s: it still needs %s\n", images.Ref(name), clikit.Dash(final.Status.Phase), clikit.JoinOr(missing, "its data"))
	return err
}

// uploadPart streams one file to the image's data and returns the image
// as the server answered and the file's SHA-256 as sent.
func uploadPart(ctx context.Context, r *rawConn, project, name string, p upload, progress io.Writer, live bool) (*api.Object, string, error) {
	file, err := os.Open(p.path)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", partFlag(p.part), err)
	}
	defer file.Close()
	var h hash.Hash
	pr := newUploadProgress(nil, progress, live, p.part, p.size)
	u := r.url(objectPath(project, images, name, plasmavmcv1.ImageDataPath), url.Values{"part": {p.part}})
	resp, err := r.do(ctx, func() (*http.Request, error) {
		if _, err := file.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		h = sha256.New()
		pr.reset(io.TeeReader(file, h))
		var body io.Reader = pr
		if p.size == 0 {
			body = http.NoBody
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, body)
		if err != nil {
			return nil, err
		}
		req.ContentLength = p.size
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Accept", "application/json")
		return req, nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("%s: uploading %s: %w", images.Ref(name), p.part, err)
	}
	defer resp.Body.Close()
	var o api.Object
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&o); err != nil {
		return nil, "", fmt.Errorf("%s: uploading %s: decoding the answer: %w", images.Ref(name), p.part, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	pr.done(sum)
	return &o, sum, nil
}

// imageUse is what an image's describe shows beyond the image: the VMs of
// the project that boot it.
type imageUse struct {
	vms []string
	err error
}

func imageUsers(ctx context.Context, c *clikit.Conn, o image) imageUse {
	vs, err := clikit.ListWhere(ctx, c, vms, false, func(v vm) bool { return v.Spec.Image == o.Name() })
	return imageUse{vms: clikit.Names(vs), err: err}
}

func describeImage(d *clikit.Desc, o image, u imageUse) {
	d.KV("Format", o.Spec.Format)
	if o.Spec.Format == plasmavmcv1.FormatKernel {
		d.KV("Command line", o.Spec.Cmdline)
	}
	d.KV("Description", o.Spec.Description)
	d.KV("Phase", o.Status.Phase)
	d.KV("Size", clikit.HumanBytes(o.Status.Size))
	var rows [][]string
	for _, p := range o.Status.Parts {
		rows = append(rows, []string{p.Name, clikit.HumanBytes(p.Size), p.SHA256})
	}
	hint := "none uploaded (ultracloud image upload " + o.Name() + " FILE)"
	if o.Spec.Format == plasmavmcv1.FormatKernel {
		hint = "none uploaded (ultracloud image upload " + o.Name() + " --kernel FILE --initrd FILE)"
	}
	d.Table("Parts", []string{"PART", "SIZE", "SHA256"}, rows, hint)
	if u.err != nil {
		d.KV("Used by", fmt.Sprintf("cannot be read: %v", u.err))
		return
	}
	d.KV("Used by", clikit.JoinOr(u.vms, "no VM"))
}
