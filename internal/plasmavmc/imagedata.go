package plasmavmc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

// Image data lives in the store, cut into chunks under
// /plasmavmc/imagedata/<project>/<image>/<uid>/<part>/<index>, until
// lightningstor holds it: every API node serves every image, and a stored
// image is as durable and replicated as the resources are. Deleting an
// image leaves a note under imageGCPrefix in the same transaction; the
// image collector removes the chunks afterwards (an image's data can be
// far more than one transaction may delete), and the UID in the path keeps
// a new image of the same name apart from the old one's leftovers.
const (
	imageDataPrefix = "/plasmavmc/imagedata/"
	// imageGCPrefix + project/image/uid: data of a deleted image.
	imageGCPrefix = "/plasmavmc/imagegc/"
	chunkSize     = 1 << 20
	// maxImageSize bounds one part (a disk image of 64 GiB).
	maxImageSize = 64 << 30
)

func imageDataDir(project, image, uid string) string {
	return imageDataPrefix + project + "/" + image + "/" + uid + "/"
}

func imagePartPrefix(o *api.Object, part string) []byte {
	return []byte(imageDataDir(o.Metadata.Project, o.Metadata.Name, o.Metadata.UID) + part + "/")
}

func chunkKey(prefix []byte, i int) []byte {
	return append(append([]byte(nil), prefix...), fmt.Sprintf("%08d", i)...)
}

// partsOf lists the parts an image of format has.
func partsOf(format string) []string {
	if format == plasmavmcv1.FormatKernel {
		return []string{plasmavmcv1.PartKernel, plasmavmcv1.PartInitrd}
	}
	return []string{plasmavmcv1.PartDisk}
}

// deleteImageData is the op that hands a deleted image's data to the
// collector.
func deleteImageData(o *api.Object) []storage.Op {
	return []storage.Op{{Type: storage.OpPut, Key: []byte(imageGCPrefix + o.Metadata.Project + "/" + o.Metadata.Name + "/" + o.Metadata.UID),
		Value: []byte(imageDataDir(o.Metadata.Project, o.Metadata.Name, o.Metadata.UID))}}
}

// dropChunks deletes every chunk under prefix, a transaction of at most
// storage.MaxTxnOps deletes at a time.
func dropChunks(ctx context.Context, st storage.Store, prefix []byte) error {
	for {
		kvs, _, err := st.Range(ctx, prefix, storage.PrefixEnd(prefix), storage.MaxTxnOps)
		if err != nil {
			return err
		}
		if len(kvs) == 0 {
			return nil
		}
		ops := make([]storage.Op, len(kvs))
		for i, kv := range kvs {
			ops[i] = storage.Op{Type: storage.OpDelete, Key: kv.Key}
		}
		if _, err := st.Txn(ctx, storage.Txn{Then: ops}); err != nil {
			return err
		}
	}
}

// collectImages removes the data of deleted images (see imageGCPrefix).
func collectImages(ctx context.Context, st storage.Store) error {
	prefix := []byte(imageGCPrefix)
	kvs, _, err := st.Range(ctx, prefix, storage.PrefixEnd(prefix), 64)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		if err := dropChunks(ctx, st, kv.Value); err != nil {
			return err
		}
		if _, err := st.Txn(ctx, storage.Txn{Then: []storage.Op{{Type: storage.OpDelete, Key: kv.Key}}}); err != nil {
			return err
		}
	}
	return nil
}

func partParam(r *http.Request, format string) (string, error) {
	part := r.URL.Query().Get("part")
	if part == "" && format != plasmavmcv1.FormatKernel {
		part = plasmavmcv1.PartDisk
	}
	if !slices.Contains(partsOf(format), part) {
		return "", apiserver.FieldError("part", "%q: a %s image has the parts %v", part, format, partsOf(format))
	}
	return part, nil
}

func (k *kinds) imageActions() []apiserver.Action {
	upload := apiserver.Action{Name: plasmavmcv1.ImageDataPath, Method: http.MethodPut, Verb: "upload",
		Summary: "upload an image part (?part=disk|kernel|initrd), streamed as application/octet-stream",
		MaxBody: maxImageSize,
		Handler: apiserver.Stream("application/json", func(c *apiserver.Call, w http.ResponseWriter) error {
			spec, _, err := decodeObj[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus](c.Object)
			if err != nil {
				return err
			}
			part, err := partParam(c.Request, spec.Format)
			if err != nil {
				return err
			}
			prefix := imagePartPrefix(c.Object, part)
			if err := dropChunks(c.Context(), k.store, prefix); err != nil {
				return err
			}
			body := http.MaxBytesReader(w, c.Request.Body, maxImageSize)
			h := sha256.New()
			buf := make([]byte, chunkSize)
			var size int64
			for i := 0; ; i++ {
				n, rerr := io.ReadFull(body, buf)
				if n > 0 {
					h.Write(buf[:n])
					size += int64(n)
					if _, err := k.store.Txn(c.Context(), storage.Txn{Then: []storage.Op{
						{Type: storage.OpPut, Key: chunkKey(prefix, i), Value: append([]byte(nil), buf[:n]...)}}}); err != nil {
						return fmt.Errorf("plasmavmc: storing image data: %w", err)
					}
				}
				if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
					break
				}
				if rerr != nil {
					var mbe *http.MaxBytesError
					if errors.As(rerr, &mbe) {
						return apiserver.Errorf(http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge, "an image part is at most %d bytes", int64(maxImageSize))
					}
					return apiserver.Errorf(http.StatusBadRequest, api.CodeBadRequest, "reading the upload: %v", rerr)
				}
			}
			sum := hex.EncodeToString(h.Sum(nil))
			o, err := c.Update(func(o *api.Object) error {
				sp, st, err := decodeObj[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus](o)
				if err != nil {
					return err
				}
				st.Parts = slices.DeleteFunc(st.Parts, func(p plasmavmcv1.ImagePart) bool { return p.Name == part })
				st.Parts = append(st.Parts, plasmavmcv1.ImagePart{Name: part, Size: size, SHA256: sum})
				slices.SortFunc(st.Parts, func(a, b plasmavmcv1.ImagePart) int { return compareStr(a.Name, b.Name) })
				st.Size, st.Phase = 0, "Ready"
				for _, want := range partsOf(sp.Format) {
					if !slices.ContainsFunc(st.Parts, func(p plasmavmcv1.ImagePart) bool { return p.Name == want }) {
						st.Phase = "Pending"
					}
				}
				for _, p := range st.Parts {
					st.Size += p.Size
				}
				raw, err := json.Marshal(st)
				o.Status = raw
				return err
			})
			if err != nil {
				return err
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			return json.NewEncoder(w).Encode(o)
		}),
	}
	download := apiserver.Action{Name: plasmavmcv1.ImageDataPath, Method: http.MethodGet, Verb: "get",
		Summary: "download an image part (?part=disk|kernel|initrd) as application/octet-stream",
		Handler: apiserver.Stream("application/octet-stream", func(c *apiserver.Call, w http.ResponseWriter) error {
			spec, st, err := decodeObj[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus](c.Object)
			if err != nil {
				return err
			}
			part, err := partParam(c.Request, spec.Format)
			if err != nil {
				return err
			}
			i := slices.IndexFunc(st.Parts, func(p plasmavmcv1.ImagePart) bool { return p.Name == part })
			if i < 0 {
				return apiserver.Errorf(http.StatusConflict, plasmavmcv1.CodeImageNotReady, "image %q has no %s uploaded yet", c.Name, part)
			}
			info := st.Parts[i]
			prefix := imagePartPrefix(c.Object, part)
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
			w.Header().Set("X-Content-SHA256", info.SHA256)
			rc := http.NewResponseController(w)
			var sent int64
			for idx := 0; sent < info.Size; idx++ {
				kv, err := k.store.Get(c.Context(), chunkKey(prefix, idx))
				if err != nil {
					return fmt.Errorf("plasmavmc: image %s chunk %d: %w", c.Name, idx, err)
				}
				if idx == 0 {
					w.WriteHeader(http.StatusOK)
				}
				if _, err := w.Write(kv.Value); err != nil {
					return err
				}
				sent += int64(len(kv.Value))
				_ = rc.Flush()
			}
			if info.Size == 0 {
				w.WriteHeader(http.StatusOK)
			}
			return nil
		}),
	}
	return []apiserver.Action{upload, download}
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
