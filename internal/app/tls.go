package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/flags"
)

// certFiles is the API's certificate, read from --tls-cert and --tls-key
// and read again when either file changes (a renewal by certbot or a
// secret mounted again), so that a server need not restart for a new
// certificate. A pair that does not load keeps the one before it, which
// the log says.
type certFiles struct {
	cert, key string
	log       *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	stamp   [2]fileStamp // of the files the current pair was read from
	checked time.Time    // when the files were last looked at
	failed  [2]fileStamp // of a pair that did not load, not to be read again
	warned  time.Time    // when the certificate's end was last warned of
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// certCheckEvery is how often a handshake looks at the files: a stat of
// each.
const certCheckEvery = time.Second

// loadCertFiles reads the pair once, for the start: an error names the
// flags and what is wrong.
func loadCertFiles(cert, key string, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{cert: cert, key: key, log: log}
	stamp, err := c.stamps()
	if err == nil {
		c.current, err = c.read()
	}
	if err != nil {
		return nil, err
	}
	c.stamp, c.checked = stamp, time.Now()
	c.warnExpiry(c.checked)
	return c, nil
}

// expiryWarning is how long before its end a certificate served is warned
// of: long enough for a renewal that failed to be seen and done by hand.
const expiryWarning = 14 * 24 * time.Hour

// warnExpiry logs, at most once a day, that the certificate served ends
// within expiryWarning or has ended: clients will refuse it then, and a
// renewal that failed is otherwise found by them. c.mu must be held, or c
// not shared yet.
func (c *certFiles) warnExpiry(now time.Time) {
	left := c.current.Leaf.NotAfter.Sub(now)
	if left > expiryWarning || !c.warned.IsZero() && now.Sub(c.warned) < 24*time.Hour {
		return
	}
	c.warned = now
	if left <= 0 {
		c.log.Error("the API's certificate has expired: clients refuse it; write a renewed one over --tls-cert and --tls-key (it is read again, no restart needed)", "file", c.cert, "not_after", c.current.Leaf.NotAfter)
		return
	}
	c.log.Warn("the API's certificate expires soon: write a renewed one over --tls-cert and --tls-key before then (it is read again, no restart needed)", "file", c.cert, "not_after", c.current.Leaf.NotAfter, "in", left.Round(time.Hour).String())
}

// stamps returns the files' times and sizes.
func (c *certFiles) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, path := range []string{c.cert, c.key} {
		fi, err := os.Stat(path)
		if err != nil {
			return out, fmt.Errorf("--%s/--%s: %w", flags.TLSCert, flags.TLSKey, err)
		}
		out[i] = fileStamp{fi.ModTime(), fi.Size()}
	}
	return out, nil
}

// read loads the pair, and checks that the certificate is one a client
// can be given.
func (c *certFiles) read() (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("--%s %s and --%s %s: %w (give a PEM certificate, its chain after it, and the PEM private key that matches it)", flags.TLSCert, c.cert, flags.TLSKey, c.key, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("--%s %s: %w", flags.TLSCert, c.cert, err)
	}
	pair.Leaf = leaf
	return &pair, nil
}

// get is tls.Config.GetCertificate: the current pair, read again first
// when the files changed since.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) < certCheckEvery {
		return c.current, nil
	}
	c.checked = time.Now()
	defer c.warnExpiry(c.checked)
	stamp, err := c.stamps()
	if err != nil || stamp == c.stamp || stamp == c.failed {
		// A file missing for a moment (being replaced) keeps the pair
		// served; so does one that did not load, until it changes.
		return c.current, nil
	}
	pair, err := c.read()
	if err != nil {
		// The two files are often written one after the other: the next
		// change is read again.
		c.failed = stamp
		c.log.Warn("the API's certificate files changed but do not load; still serving the certificate read before: write a matching pair", "err", err)
		return c.current, nil
	}
	c.current, c.stamp, c.failed, c.warned = pair, stamp, [2]fileStamp{}, time.Time{}
	c.log.Info("the API's certificate was read again", "subject", pair.Leaf.Subject.String(), "not_after", pair.Leaf.NotAfter)
	return c.current, nil
}

// tlsConfig is the API's TLS configuration for certificates read from
// files.
func (c *certFiles) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.get}
}

// httpErrors is the HTTP server's error log: its errors are warnings
// (an accept failing for want of file descriptors), but for failed TLS
// handshakes, which any client or scanner causes (a client that does not
// trust the certificate, plain HTTP to the port) and which the server's
// operator has nothing to do about: those are debug.
type httpErrors struct{ log *slog.Logger }

func (h httpErrors) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "TLS handshake error") {
		h.log.Debug(msg)
	} else {
		h.log.Warn(msg)
	}
	return len(p), nil
}

// errHalfTLS is Validate's error for one of the two TLS flags without the
// other.
var errHalfTLS = errors.New("give both --" + flags.TLSCert + " and --" + flags.TLSKey + " (the certificate and its private key), or neither")
