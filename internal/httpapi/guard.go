package httpapi

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/job"
)

// authorize checks the request's token when the server has one: always for
// requests that change something, and for reads too with AuthRead. Health
// probes stay open. Browsers cannot set headers on websockets, so a token
// may also come as ?access_token= or as a "bearer.<token>" subprotocol.
func (s *Server) authorize(r *http.Request) error {
	if s.cfg.AuthToken == "" {
		return nil
	}
	read := r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions
	if read && (!s.cfg.AuthRead || r.URL.Path == "/healthz" || r.URL.Path == "/readyz") {
		return nil
	}
	got, ok := token(r)
	if !ok {
		return job.Errorf(job.EUnauthorized, "this server needs a token for %s %s: send the header \"Authorization: Bearer <token>\" with the token the server was started with (--%s)", r.Method, r.URL.Path, flags.AuthToken)
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AuthToken)) != 1 {
		return job.Errorf(job.EUnauthorized, "the token sent is not this server's; check --%s (or %s) against the server's --%s", flags.Token, flags.Env(flags.Token), flags.AuthToken)
	}
	return nil
}

func token(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		t, ok := strings.CutPrefix(h, "Bearer ")
		return strings.TrimSpace(t), ok
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, true
	}
	for _, p := range strings.Split(r.Header.Get("Sec-WebSocket-Protocol"), ",") {
		if t, ok := strings.CutPrefix(strings.TrimSpace(p), "bearer."); ok {
			return t, true
		}
	}
	return "", false
}

// limiter bounds how fast each client (by IP address) may submit jobs.
type limiter struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	clients map[string]*peer
	swept   time.Time
}

type peer struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(perSecond float64, burst int) *limiter {
	if perSecond <= 0 {
		return nil
	}
	return &limiter{rate: rate.Limit(perSecond), burst: max(burst, 1), clients: map[string]*peer{}}
}

// allow reports whether client ip may submit now.
func (l *limiter) allow(ip string) bool {
	if l == nil {
		return true
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		// Forget clients idle long enough for their bucket to be full.
		for k, c := range l.clients {
			if now.Sub(c.seen) > time.Minute {
				delete(l.clients, k)
			}
		}
		l.swept = now
	}
	c, ok := l.clients[ip]
	if !ok {
		c = &peer{lim: rate.NewLimiter(l.rate, l.burst)}
		l.clients[ip] = c
	}
	c.seen = now
	return c.lim.AllowN(now, 1)
}

// clientIP is the address a request came from, the client as the limits
// per client know it. A request from a trusted proxy (Config.TrustedProxies)
// comes from the address its X-Forwarded-For (or, without one, its
// standard Forwarded header's for= parameters, RFC 7239) names last that
// is not itself a trusted proxy: behind a reverse proxy every client would
// otherwise be the proxy, sharing one client's bounds (four uploads, a
// tenth of the websockets, one submit rate). The header's entries left of
// that one are the client's own say, and not believed; nor is the header
// at all from an address not trusted.
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(s.cfg.TrustedProxies) == 0 {
		return host
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !s.trusted(addr) {
		return host
	}
	client := addr
	hops := forwardedFor(r.Header)
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(hops[i])
		if err != nil {
			// Not an address ("unknown", an obfuscated name): what is
			// left of it cannot be believed either; the hop that sent
			// it is the client.
			return client.String()
		}
		client = hop.Unmap()
		if !s.trusted(client) {
			return client.String()
		}
	}
	return client.String()
}

// forwardedFor lists the addresses a request went through, the client
// first, as its proxies wrote them: X-Forwarded-For's, or when it has none
// the for= parameters of Forwarded (RFC 7239), ports and brackets taken
// off. An element that names none is listed as "", which no address is.
func forwardedFor(h http.Header) []string {
	var hops []string
	if xff := h.Values("X-Forwarded-For"); len(xff) > 0 {
		for _, v := range xff {
			for hop := range strings.SplitSeq(v, ",") {
				hops = append(hops, strings.TrimSpace(hop))
			}
		}
		return hops
	}
	for _, v := range h.Values("Forwarded") {
		for elem := range strings.SplitSeq(v, ",") {
			hop := ""
			for pair := range strings.SplitSeq(elem, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok && strings.EqualFold(k, "for") {
					hop = forwardedNode(val)
				}
			}
			hops = append(hops, hop)
		}
	}
	return hops
}

// forwardedNode is the address of a Forwarded for= value: "192.0.2.60",
// "\"192.0.2.60:4711\"", "\"[2001:db8::17]:4711\"", as the address alone.
func forwardedNode(v string) string {
	v = strings.Trim(strings.TrimSpace(v), `"`)
	if rest, ok := strings.CutPrefix(v, "["); ok {
		v, _, _ = strings.Cut(rest, "]")
		return v
	}
	if host, _, err := net.SplitHostPort(v); err == nil {
		return host
	}
	return v
}

// trusted reports whether addr is one of the trusted proxies.
func (s *Server) trusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ParseTrustedProxies reads a list of addresses and networks
// ("10.0.0.5", "10.0.0.0/8", "fd00::/8"), as --trusted-proxy takes them.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range list {
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("--%s %q is neither an IP address nor a network (10.0.0.5, 10.0.0.0/8, fd00::/8)", flags.TrustedProxy, v)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// MaxUploadsPerClient bounds the uploads of one client (by IP address) the
// server reads at once, of the process's dataset.MaxUploads: a client
// whose uploads stall held every one of them, and every other client's
// upload waited up to a minute (the stall's bound) per round, by hand 82 s
// behind 300 stalled ones. The CLI and the dashboard send a dataset's
// files one after the other.
const MaxUploadsPerClient = 4

// clientSlots bounds what each client holds at once; the zero value with
// per set is ready.
type clientSlots struct {
	per     int
	mu      sync.Mutex
	clients map[string]*slots
	holding atomic.Int64 // requests holding a slot
	waiting atomic.Int64 // requests waiting for one
}

type slots struct {
	held  chan struct{}
	users int // requests holding or waiting for one, to forget an idle client
}

// take waits for one of client ip's slots, until ctx ends, and returns its
// release.
func (c *clientSlots) take(ctx context.Context, ip string) (release func(), err error) {
	c.mu.Lock()
	if c.clients == nil {
		c.clients = map[string]*slots{}
	}
	s := c.clients[ip]
	if s == nil {
		s = &slots{held: make(chan struct{}, c.per)}
		c.clients[ip] = s
	}
	s.users++
	c.mu.Unlock()
	leave := func() {
		c.mu.Lock()
		if s.users--; s.users == 0 {
			delete(c.clients, ip)
		}
		c.mu.Unlock()
	}
	select {
	case s.held <- struct{}{}:
	default:
		c.waiting.Add(1)
		select {
		case s.held <- struct{}{}:
			c.waiting.Add(-1)
		case <-ctx.Done():
			c.waiting.Add(-1)
			leave()
			return nil, ctx.Err()
		}
	}
	c.holding.Add(1)
	return func() { c.holding.Add(-1); <-s.held; leave() }, nil
}

// submit hands a job to the service, which admits it with the client's
// submit rate once the spec is valid.
func (s *Server) submit(r *http.Request, spec job.Spec) (*job.Job, error) {
	return s.cfg.Service.Submit(r.Context(), spec, func() error { return s.allow(r) })
}

// allow refuses a submit of a client that submits too fast.
func (s *Server) allow(r *http.Request) error {
	if !s.limit.allow(s.clientIP(r)) {
		return job.Errorf(job.EBusy, "too many submissions from this client: at most %g a second (burst %d); retry in a few seconds", s.cfg.SubmitRate, s.cfg.SubmitBurst)
	}
	return nil
}
