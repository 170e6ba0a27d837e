// Package logtest keeps what a program logs, for its tests to look at.
package logtest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

// Levels is a slog handler that keeps the messages logged at each level.
type Levels struct {
	mu   sync.Mutex
	seen map[slog.Level][]string
}

// Enabled keeps every level.
func (l *Levels) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps r's message under its level.
func (l *Levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[slog.Level][]string{}
	}
	l.seen[r.Level] = append(l.seen[r.Level], r.Message)
	return nil
}

// WithAttrs returns l: attributes are not kept.
func (l *Levels) WithAttrs([]slog.Attr) slog.Handler { return l }

// WithGroup returns l.
func (l *Levels) WithGroup(string) slog.Handler { return l }

// At returns the messages logged at level that contain part, in order.
func (l *Levels) At(level slog.Level, part string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.seen[level] {
		if strings.Contains(m, part) {
			out = append(out, m)
		}
	}
	return out
}
