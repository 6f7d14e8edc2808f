package admin

import (
	"testing"
	"time"
)

func TestParseTimeReadsPgBouncersFormats(t *testing.T) {
	want := time.Date(2026, 12, 5, 15, 4, 5, 0, time.UTC)
	for _, s := range []string{"2026-12-05 15:04:05 UTC", "2026-12-05 15:04:05.000000 UTC", "2026-12-05 15:04:05+00", "2026-12-05T15:04:05Z"} {
		if got := parseTime(s); !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, want %v", s, got, want)
		}
	}
	for _, s := range []string{"", "never", "2026-13-05 15:04:05 UTC"} {
		if got := parseTime(s); !got.IsZero() {
			t.Errorf("parseTime(%q) = %v, want zero", s, got)
		}
	}
	if atoi("") != 0 || atoi("x") != 0 || atoi("42") != 42 {
		t.Error("atoi")
	}
}
