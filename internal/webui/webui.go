// Package webui serves the dashboard: the Vite build of web/, embedded in
// the binary, with index.html for every client-side route. A binary built
// without the dashboard serves a page that says how to build it.
package webui

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed all:ui
var ui embed.FS

// Handler serves the dashboard.
func Handler() http.Handler {
	app, err := fs.Sub(ui, "ui/app")
	if err != nil {
		return placeholder()
	}
	index, err := fs.ReadFile(app, "index.html")
	if err != nil {
		return placeholder()
	}
	files := http.FileServerFS(app)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		if name != "" && name != "index.html" {
			if _, err := fs.Stat(app, name); err == nil {
				if strings.HasPrefix(name, "assets/") {
					// Vite names assets by content: they never change.
					w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
				}
				files.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(index)
	})
}

// Built reports whether the dashboard is in this binary.
func Built() bool {
	_, err := fs.Stat(ui, "ui/app/index.html")
	return err == nil
}

func placeholder() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(placeholderPage))
	})
}

const placeholderPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mrcluster</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 44rem; margin: 3rem auto; line-height: 1.5">
<h1>mrcluster</h1>
<p>The cluster is running, but this binary was built without its dashboard.
Build it with <code>make run</code> (or <code>make web</code>, then <code>make build</code>), which needs Node.js and npm.</p>
<p>The API works meanwhile: <a href="/api/v1/jobs">/api/v1/jobs</a>, <a href="/api/v1/workers">/api/v1/workers</a>,
<a href="/api/v1/queue">/api/v1/queue</a>, <a href="/status">/status</a>.
Submit a job: <code>curl -X POST localhost:8080/short/8</code></p>
</body></html>
`
