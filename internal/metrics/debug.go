package metrics

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// Debug is a listener of its own for Go's profiles (net/http/pprof) of a
// server or worker process: goroutine dumps of a process that seems stuck,
// CPU and heap profiles of one that is slow or large. It has no
// authentication and shows what the process holds, so it listens on a
// loopback address only (reach it from elsewhere through an SSH tunnel).
type Debug struct {
	ln  net.Listener
	srv *http.Server
}

// ListenDebug serves the profiles on addr, which must be a loopback
// address (port 0 picks a free one); flag names the setting in errors.
func ListenDebug(addr, flag string, log *slog.Logger) (*Debug, error) {
	if err := CheckDebugAddr(addr, flag); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--%s %s: %w", flag, addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	d := &Debug{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("the profiles' listener stopped; the process runs on without it", "addr", addr, "err", err)
		}
	}()
	log.Info("Go profiles served", "url", d.URL())
	return d, nil
}

// CheckDebugAddr says what is wrong with addr as ListenDebug's, if
// anything.
func CheckDebugAddr(addr, flag string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q: %w (give HOST:PORT, e.g. 127.0.0.1:6060)", flag, addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--%s %s is beyond loopback: the profiles have no authentication and show what the process holds; listen on 127.0.0.1 and reach it through an SSH tunnel (ssh -L 6060:127.0.0.1:6060 HOST)", flag, addr)
	}
	return nil
}

// URL is where the profiles' index is.
func (d *Debug) URL() string { return "http://" + d.ln.Addr().String() + "/debug/pprof/" }

// Close stops serving, ending the requests under way (a CPU profile
// being taken).
func (d *Debug) Close() error { return d.srv.Close() }
