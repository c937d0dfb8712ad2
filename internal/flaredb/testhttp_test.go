package flaredb_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// rawPost sends body over HTTP/2 (h2c) with the flaredb headers, plus
// extra headers, and returns the status and body.
func rawPost(t testing.TB, addr, path, cluster string, body []byte, extra map[string]string) (int, []byte) {
	t.Helper()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &p, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}, Timeout: 20 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.HeaderCluster, cluster)
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}
