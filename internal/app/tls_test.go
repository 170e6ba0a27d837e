package app_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
)

// The API serves HTTPS with --tls-cert and --tls-key: the Go client that
// trusts the CA submits, follows the job's events over a secure websocket
// and reads it; one that does not trust it is told so, at once, with
// nothing sent; plain HTTP to the port is told to use https://. A new
// certificate written over the files is served without a restart, and a
// pair that does not match keeps the one before it.
func TestAPIOverTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := apitest.NewCA(t, dir)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(t, certFile, keyFile, 100)
	logs := &app.LockedBuffer{}
	b := setup(t, func(c *app.Config) {
		c.TLSCert, c.TLSKey = certFile, keyFile
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	url := b.srv.URL()
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("URL() = %s, want https://", url)
	}
	ctx := apitest.Context(t)

	c := client.New(url, "")
	c.HTTP = client.HTTPWithRoots(ca.Roots)
	j, err := c.SubmitWithKey(ctx, client.Spec{Kind: "noop", Partitions: 3}, "tls-1")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := c.Events(ctx) // the websocket, over TLS
	if err != nil {
		t.Fatalf("events over wss: %v", err)
	}
	ev.Close()
	if j, err = c.Wait(ctx, j.ID, nil); err != nil || j.State != client.Succeeded {
		t.Fatalf("wait over https: %+v, %v", j, err)
	}

	// A client that does not trust the CA: a certificate error, not an
	// unreachable server to try again.
	stranger := client.New(url, "")
	_, err = stranger.SubmitWithKey(ctx, client.Spec{Kind: "noop", Partitions: 1}, "tls-2")
	var certErr *client.CertificateError
	if !errors.As(err, &certErr) || client.IsUnavailable(err) {
		t.Fatalf("submit without the CA: %v (%T), want a *client.CertificateError", err, err)
	}
	if _, err := stranger.Events(ctx); !errors.As(err, &certErr) {
		t.Fatalf("events without the CA: %v, want a *client.CertificateError", err)
	}
	// Plain HTTP to the HTTPS port.
	plain := client.New(strings.Replace(url, "https://", "http://", 1), "")
	_, err = plain.Job(ctx, j.ID)
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "use https://") {
		t.Fatalf("plain HTTP to the HTTPS port: %v", err)
	}
	if strings.Contains(logs.String(), "handshake error") {
		t.Errorf("a client's failed handshake is logged above debug:\n%s", logs.String())
	}
	if list, err := c.Jobs(ctx, client.ListOptions{}); err != nil || len(list.Jobs) != 1 {
		t.Fatalf("jobs after the refused submits: %+v, %v; want only the first job", list, err)
	}

	// A renewed certificate is served at the next handshake, once the
	// server has looked at the files again (every second at most).
	ca.Issue(t, certFile, keyFile, 101)
	eventually(t, 30*time.Second, "the renewed certificate served", func() bool { return servedSerial(t, url, ca) == 101 })
	if !strings.Contains(logs.String(), "certificate was read again") {
		t.Errorf("the log does not say the certificate was read again:\n%s", logs.String())
	}
	// A certificate whose key is not its own (the key of the one before):
	// the server keeps the last good pair and says so.
	other := t.TempDir()
	ca.Issue(t, filepath.Join(other, "cert.pem"), filepath.Join(other, "key.pem"), 102)
	warned := strings.Count(logs.String(), "do not load") // the renewal's two files may have met one
	cert, err := os.ReadFile(filepath.Join(other, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the log's warning of a pair that does not load", func() bool {
		servedSerial(t, url, ca) // a handshake, which looks at the files
		return strings.Count(logs.String(), "do not load") > warned
	})
	if s := servedSerial(t, url, ca); s != 101 {
		t.Fatalf("after a bad pair the server serves serial %d, want 101 still", s)
	}
	if _, err := c.Job(ctx, j.ID); err != nil {
		t.Fatalf("a read after the bad pair: %v", err)
	}
	// A pair whose certificate ends within two weeks is served, and
	// warned of.
	if strings.Contains(logs.String(), "expires soon") {
		t.Fatalf("a certificate valid for a year was warned of:\n%s", logs.String())
	}
	ca.IssueUntil(t, certFile, keyFile, 103, time.Now().Add(3*24*time.Hour))
	eventually(t, 30*time.Second, "the certificate that ends soon served", func() bool { return servedSerial(t, url, ca) == 103 })
	if !strings.Contains(logs.String(), "certificate expires soon") {
		t.Errorf("a certificate ending in 3 days was not warned of:\n%s", logs.String())
	}
}

// servedSerial is the serial number of the certificate the server at url
// presents in a new handshake.
func servedSerial(t *testing.T, url string, ca *apitest.CA) int64 {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: ca.Roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(url, "https://"))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// A server is given both TLS files or neither, and files it can read:
// each mistake is named at start.
func TestTLSSettingsAreChecked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := app.DefaultConfig()
	cfg.TLSCert = filepath.Join(dir, "cert.pem")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Fatalf("--tls-cert alone: %v", err)
	}
	ca := apitest.NewCA(t, dir)
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.TLSCert, cfg.TLSKey = ca.File, filepath.Join(dir, "missing.pem")
	if srv, err := app.Start(context.Background(), cfg); err == nil {
		_ = srv.Stop(context.Background())
		t.Fatal("a server started with a key file that is not there")
	} else if !strings.Contains(err.Error(), "--tls-key") || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("a missing key file: %v; want it named", err)
	}
	// An expired certificate does not stop the start (clients refuse it;
	// one written over it is read again), and is an error in the log.
	cert, key := filepath.Join(dir, "old.pem"), filepath.Join(dir, "old-key.pem")
	ca.IssueUntil(t, cert, key, 5, time.Now().Add(-time.Hour))
	logs := &app.LockedBuffer{}
	b := setup(t, func(c *app.Config) {
		c.TLSCert, c.TLSKey = cert, key
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "certificate has expired") {
		t.Fatalf("a server started with an expired certificate logged:\n%s", logs.String())
	}
	if !strings.HasPrefix(b.srv.URL(), "https://") {
		t.Fatalf("URL() = %s", b.srv.URL())
	}
}
