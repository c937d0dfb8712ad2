// Package scripts tests the shell scripts of scripts/ that the README's
// commands run, as a fresh machine would run them.
package scripts

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const toolchain = "golang.org/toolchain@v0.0.1-go1.26.8.linux-amd64"

// fakeGo is the go of the fake toolchain: enough for the script's check.
const fakeGo = "#!/bin/sh\ncase \"$1 $2\" in\n\"env GOVERSION\") echo go1.26.8 ;;\n*) echo \"go version go1.26.8 linux/amd64 (fake)\" ;;\nesac\n"

// moduleZip makes a toolchain module zip and its h1: hash (Go's
// dirhash.Hash1, written here again to cross-check the script's).
func moduleZip(t *testing.T, files map[string]string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var names []string
	for name := range files {
		names = append(names, toolchain+"/"+name)
	}
	sort.Strings(names)
	sum := sha256.New()
	for _, n := range names {
		content := files[strings.TrimPrefix(n, toolchain+"/")]
		h := zip.FileHeader{Name: n, Method: zip.Deflate}
		h.SetMode(0o755)
		w, err := zw.CreateHeader(&h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(content))
		fmt.Fprintf(sum, "%x  %s\n", sha256.Sum256([]byte(content)), n)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), "h1:" + base64.StdEncoding.EncodeToString(sum.Sum(nil))
}

// proxy serves a module proxy with one toolchain zip and a checksum
// database lookup saying want.
func proxy(t *testing.T, zipData []byte, want string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/golang.org/toolchain/@v/v0.0.1-go1.26.8.linux-amd64.zip":
			w.Write(zipData)
		case "/sumdb/sum.golang.org/lookup/" + toolchain:
			fmt.Fprintf(w, "123\ngolang.org/toolchain v0.0.1-go1.26.8.linux-amd64 %s\n\n", want)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// needGo runs scripts/lib.sh's need_go with Go hidden from PATH (no
// /usr/local/go either) and returns its output and the go it left on PATH.
func needGo(t *testing.T, goproxy, cache string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-c", `. scripts/lib.sh && need_go && command -v go && go version`)
	cmd.Dir = "../.."
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + t.TempDir(), "ULTRACLOUD_SYSTEM_GO=",
		"ULTRACLOUD_CACHE=" + cache, "GOPROXY=" + goproxy}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestNeedGoInstallsAVerifiedToolchain: with no Go on the machine, the
// scripts fetch the toolchain module from the proxy, check it against the
// checksum database and put it on PATH; a zip that does not match is
// refused and nothing is installed.
func TestNeedGoInstallsAVerifiedToolchain(t *testing.T) {
	if _, err := exec.LookPath("unzip"); err != nil && os.Geteuid() != 0 {
		t.Skip("unzip is missing and only root may install it")
	}
	data, sum := moduleZip(t, map[string]string{"bin/go": fakeGo, "VERSION": "go1.26.8\n"})

	cache := t.TempDir()
	out, err := needGo(t, proxy(t, data, sum), cache)
	if err != nil || !strings.Contains(out, filepath.Join(cache, "go", "bin", "go")) || !strings.Contains(out, "go1.26.8 linux/amd64 (fake)") {
		t.Fatalf("need_go with a matching zip: %v\n%s", err, out)
	}
	// Installed once, used again without a download (no proxy now).
	if out, err := needGo(t, "http://127.0.0.1:1", cache); err != nil || !strings.Contains(out, "(fake)") {
		t.Fatalf("need_go again: %v\n%s", err, out)
	}

	// A zip whose content differs from what the database says.
	tampered, _ := moduleZip(t, map[string]string{"bin/go": fakeGo + "# changed\n", "VERSION": "go1.26.8\n"})
	cache2 := t.TempDir()
	out, err = needGo(t, proxy(t, tampered, sum), cache2)
	if err == nil || !strings.Contains(out, "does not match the checksum database") {
		t.Fatalf("need_go with a tampered zip: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(cache2, "go")); !os.IsNotExist(err) {
		t.Fatalf("a refused toolchain left %s behind (%v)", filepath.Join(cache2, "go"), err)
	}
}
