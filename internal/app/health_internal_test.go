package app

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A refusal of writes for want of disk space is an error at once; any
// other is a warning until it has lasted alarmAfter, then an error, once;
// a new reason within the spell is not logged again; the store taking
// writes again is said, with how long it did not.
func TestWriteAlarm(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	type probe struct {
		at      time.Duration
		reason  string
		noSpace bool
		want    slog.Level // -1: nothing logged
		says    string
	}
	const none = slog.Level(-1)
	for name, probes := range map[string][]probe{
		"an election": {
			{0, "", false, none, ""},
			{2 * time.Second, "timeout", false, slog.LevelWarn, "within seconds"},
			{4 * time.Second, "timeout", false, none, ""},
			{6 * time.Second, "", false, slog.LevelInfo, "again, after 4s"},
			{8 * time.Second, "", false, none, ""},
		},
		"a store that stays down": {
			{0, "timeout", false, slog.LevelWarn, "cannot take writes"},
			{28 * time.Second, "timeout", false, none, ""},
			{30 * time.Second, "timeout", false, slog.LevelError, "for 30s"},
			{32 * time.Second, "timeout", false, none, ""},
			{34 * time.Second, "no responders", false, none, ""},
			{36 * time.Second, "", false, slog.LevelInfo, "after 36s"},
		},
		"a full disk": {
			{0, "disk full", true, slog.LevelError, "cannot take writes"},
			{2 * time.Second, "disk full", true, none, ""},
			{3 * time.Second, "disk full, 12 KiB free", true, none, ""},
			{4 * time.Second, "", false, slog.LevelInfo, "again"},
		},
		"a refusal that turns into a full disk": {
			{0, "timeout", false, slog.LevelWarn, ""},
			{2 * time.Second, "disk full", true, slog.LevelError, "for 2s"},
			{4 * time.Second, "disk full", true, none, ""},
		},
	} {
		var a writeAlarm
		for i, p := range probes {
			level, msg, ok := a.note(t0.Add(p.at), p.reason, p.noSpace)
			if !ok {
				level = none
			}
			if level != p.want || !strings.Contains(msg, p.says) {
				t.Errorf("%s, probe %d (%q at %s): logged %v %q; want %v saying %q", name, i, p.reason, p.at, level, msg, p.want, p.says)
			}
		}
	}
}

// A store that refuses writes for a reason other than a full disk is
// probed again soon, so that submits are not refused long after it takes
// writes again; a full disk and a healthy store are probed at the pace.
func TestProbeAfter(t *testing.T) {
	for _, c := range []struct {
		reason  string
		noSpace bool
		want    time.Duration
	}{
		{"", false, healthEvery},
		{"the store does not take writes: nats: no response from stream", false, healthRetry},
		{"the disk of the data directory is full", true, healthEvery},
	} {
		if got := probeAfter(c.reason, c.noSpace); got != c.want {
			t.Errorf("after a probe that found %q (no space: %v): next in %s, want %s", c.reason, c.noSpace, got, c.want)
		}
	}
	if healthRetry >= healthEvery {
		t.Errorf("a refusing store is probed every %s, not sooner than a healthy one (%s)", healthRetry, healthEvery)
	}
}
