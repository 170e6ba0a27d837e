package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// The client commands reach a server that serves HTTPS with a private CA
// given with --tls-ca (before the command too) or MRCLUSTER_TLS_CA;
// without it they say which flag to give, and a file that holds no
// certificate is named.
func TestClientCommandsOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca := apitest.NewCA(t, dir)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(t, cert, key, 7)
	srv := startServer(t, func(c *app.Config) { c.TLSCert, c.TLSKey = cert, key })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	registry := func(float64) *job.Registry { return kinds.Builtin(1) }
	mrcluster := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, args, &out, &errOut, registry)
		return out.String() + errOut.String(), err
	}

	out, err := mrcluster("--server", srv.URL(), "--tls-ca", ca.File, "submit", "noop", "2", "--wait")
	if err != nil {
		t.Fatalf("submit --wait over https: %v\n%s", err, out)
	}
	if _, err := mrcluster("jobs", "--server", srv.URL(), "--tls-ca", ca.File); err != nil {
		t.Fatalf("jobs --tls-ca: %v", err)
	}
	t.Setenv("MRCLUSTER_TLS_CA", ca.File)
	t.Setenv("MRCLUSTER_SERVER", srv.URL())
	if out, err := mrcluster("status"); err != nil || !strings.Contains(out, "workers busy") {
		t.Fatalf("status with MRCLUSTER_TLS_CA: %v\n%s", err, out)
	}
	os.Unsetenv("MRCLUSTER_TLS_CA")
	_, err = mrcluster("jobs")
	if err == nil || !strings.Contains(err.Error(), "--tls-ca") || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("jobs without the CA: %v; want the error to name --tls-ca", err)
	}
	_, err = mrcluster("jobs", "--tls-ca", cert+".missing")
	if err == nil || !strings.Contains(err.Error(), "tls-ca") || !strings.Contains(err.Error(), ".missing") {
		t.Fatalf("--tls-ca of a file that is not there: %v", err)
	}
	_, err = mrcluster("jobs", "--tls-ca", key) // a key, not a certificate
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("--tls-ca of a key file: %v", err)
	}
	_, err = mrcluster("jobs", "--server", strings.Replace(srv.URL(), "https://", "http://", 1))
	if err == nil || !strings.Contains(err.Error(), "use https://") {
		t.Fatalf("http:// to an HTTPS server: %v", err)
	}
}
