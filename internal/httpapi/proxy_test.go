package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Behind a trusted proxy the client is the last address X-Forwarded-For
// (or Forwarded) names that is not a trusted proxy; what the client wrote itself (left of
// it) and the header from anyone else are not believed.
func TestClientIPBehindTrustedProxies(t *testing.T) {
	proxies, err := ParseTrustedProxies([]string{"10.0.0.0/8", "192.168.1.7", "fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{TrustedProxies: proxies}}
	// client asks s for the client of a request from remote with the
	// values of header.
	client := func(remote, header string, values []string) string {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		for _, v := range values {
			r.Header.Add(header, v)
		}
		return s.clientIP(r)
	}
	for _, tc := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"203.0.113.9:5000", nil, "203.0.113.9"},
		{"203.0.113.9:5000", []string{"1.2.3.4"}, "203.0.113.9"}, // not a proxy: its header is its own say
		{"10.1.2.3:5000", nil, "10.1.2.3"},                       // a proxy's own request
		{"10.1.2.3:5000", []string{"1.2.3.4"}, "1.2.3.4"},
		{"10.1.2.3:5000", []string{"6.6.6.6, 1.2.3.4"}, "1.2.3.4"},                // 6.6.6.6 is what the client claimed
		{"10.1.2.3:5000", []string{"6.6.6.6, 1.2.3.4, 10.9.9.9"}, "1.2.3.4"},      // two proxies deep
		{"192.168.1.7:5000", []string{"5.5.5.5", "1.2.3.4, 10.0.0.1"}, "1.2.3.4"}, // the header twice
		{"10.1.2.3:5000", []string{"10.0.0.2, 10.0.0.3"}, "10.0.0.2"},             // only proxies: the farthest
		{"10.1.2.3:5000", []string{"1.2.3.4, junk, 10.0.0.3"}, "10.0.0.3"},        // not an address: the hop that sent it
		{"10.1.2.3:5000", []string{""}, "10.1.2.3"},
		{"[fd00::1]:5000", []string{"2001:db8::5"}, "2001:db8::5"},
		{"[::ffff:10.1.2.3]:5000", []string{"::ffff:1.2.3.4"}, "1.2.3.4"},
	} {
		if got := client(tc.remote, "X-Forwarded-For", tc.xff); got != tc.want {
			t.Errorf("from %s with X-Forwarded-For %q: client %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
	// The standard header, Forwarded (RFC 7239), when X-Forwarded-For is
	// not there: its for= parameters, quoted, with ports, in brackets.
	for _, tc := range []struct {
		remote    string
		forwarded []string
		want      string
	}{
		{"10.1.2.3:5000", []string{"for=1.2.3.4"}, "1.2.3.4"},
		{"10.1.2.3:5000", []string{`for="1.2.3.4:4711";proto=https;by=10.1.2.3`}, "1.2.3.4"},
		{"10.1.2.3:5000", []string{`For=6.6.6.6, for="[2001:db8:cafe::17]:4711", for=10.0.0.9`}, "2001:db8:cafe::17"},
		{"10.1.2.3:5000", []string{"for=6.6.6.6", "for=1.2.3.4;proto=http"}, "1.2.3.4"}, // the header twice
		{"10.1.2.3:5000", []string{"for=6.6.6.6, for=unknown"}, "10.1.2.3"},             // not an address: the hop that sent it
		{"10.1.2.3:5000", []string{"for=6.6.6.6, proto=http"}, "10.1.2.3"},              // an element naming no one
		{"10.1.2.3:5000", []string{`for="[fd00::2]"`}, "fd00::2"},                       // only proxies: the farthest
		{"203.0.113.9:5000", []string{"for=1.2.3.4"}, "203.0.113.9"},                    // not a proxy
	} {
		if got := client(tc.remote, "Forwarded", tc.forwarded); got != tc.want {
			t.Errorf("from %s with Forwarded %q: client %s, want %s", tc.remote, tc.forwarded, got, tc.want)
		}
	}
	// Both: X-Forwarded-For is read, as most proxies write it.
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr, r.Header["X-Forwarded-For"], r.Header["Forwarded"] = "10.1.2.3:5000", []string{"1.2.3.4"}, []string{"for=5.6.7.8"}
	if got := s.clientIP(r); got != "1.2.3.4" {
		t.Errorf("with both headers: client %s, want X-Forwarded-For's", got)
	}
	// No proxies trusted: the header is never read.
	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr, r.Header["X-Forwarded-For"] = "10.1.2.3:5000", []string{"1.2.3.4"}
	if got := (&Server{}).clientIP(r); got != "10.1.2.3" {
		t.Errorf("with no trusted proxies: client %s, want the peer", got)
	}
}

func TestParseTrustedProxiesNamesWhatIsWrong(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "proxy.local", "10.0.0"} {
		if _, err := ParseTrustedProxies([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "--trusted-proxy") {
			t.Errorf("%q: %v; want an error naming it and the flag", bad, err)
		}
	}
}
