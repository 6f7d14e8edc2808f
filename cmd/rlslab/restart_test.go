package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startServe runs rlslab serve with args until the test stops it; it
// returns the server's base URL and a function that stops it and waits.
func startServe(t *testing.T, args ...string) (string, func()) {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "-addr", "127.0.0.1:0", "-max-labs", "2"}, args...), func(string) string { return "" }, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("serve printed nothing: %v", <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "rlslab listening on ")
	if !ok {
		cancel()
		t.Fatalf("first line %q", line)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("serve did not shut down")
		}
	}
	t.Cleanup(stop)
	return base, stop
}

// callJSON sends a request with c and decodes a JSON answer into out (if not nil).
func callJSON(t *testing.T, c *http.Client, method, url, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, b)
		}
	}
	return resp.StatusCode
}

func TestRecordingsAndWorkshopsSurviveARestart(t *testing.T) {
	// Its own cluster (or none): it runs beside the others.
	t.Parallel()
	// As root, PostgreSQL runs as an unprivileged user, who must be able
	// to enter the data directory's parents.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}

	base, stop := startServe(t, "-db", "auto", "-data-dir", dir)
	var ws struct {
		ID             string `json:"id"`
		JoinURL        string `json:"join_url"`
		FacilitatorURL string `json:"facilitator_url"`
	}
	if code := callJSON(t, c, "POST", base+"/workshops", `{"title":"Before the restart","lessons":["set-leak"]}`, &ws); code != http.StatusCreated {
		t.Fatalf("create workshop: %d", code)
	}
	var joined struct{ Lab string }
	if code := callJSON(t, c, "POST", ws.JoinURL, `{"name":"Ann"}`, &joined); code != http.StatusCreated {
		t.Fatalf("join: %d", code)
	}
	if code := callJSON(t, c, "POST", base+"/labs/"+joined.Lab+"/runs", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`, nil); code != http.StatusAccepted {
		t.Fatalf("run: %d", code)
	}
	// The recording is saved in the background: wait for it.
	var runs []struct {
		ID    string
		Leaks int
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(runs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the run was never recorded")
		}
		time.Sleep(50 * time.Millisecond)
		callJSON(t, c, "GET", base+"/labs/"+joined.Lab+"/runs.json", "", &runs)
	}
	if runs[0].Leaks == 0 {
		t.Errorf("the session-set run recorded no leak: %+v", runs)
	}
	stop()

	// rlslab again, on the same cluster: the recording replays and the
	// workshop is there, its participant with their last run.
	base2, _ := startServe(t, "-db", "auto", "-data-dir", dir)
	var rec struct {
		ID     string
		Leaks  int
		Frames []json.RawMessage
	}
	if code := callJSON(t, c, "GET", base2+"/runs/"+runs[0].ID+".json", "", &rec); code != http.StatusOK || rec.Leaks != runs[0].Leaks || len(rec.Frames) < 2 {
		t.Fatalf("recording after the restart: %d %+v", code, rec.ID)
	}
	for _, path := range []string{"/runs/" + rec.ID, "/runs/" + rec.ID + "/frames/0", "/runs/" + rec.ID + "/frames/" + strconv.Itoa(len(rec.Frames)-1)} {
		if code := callJSON(t, c, "GET", base2+path, "", nil); code != http.StatusOK {
			t.Errorf("GET %s after the restart: %d", path, code)
		}
	}
	key := ws.FacilitatorURL[strings.Index(ws.FacilitatorURL, "?key="):]
	var st struct {
		Title        string
		Participants []struct {
			Name    string
			LastRun *struct{ Variant string } `json:"last_run"`
		}
	}
	if code := callJSON(t, c, "GET", base2+"/workshops/"+ws.ID+"/state.json"+key, "", &st); code != http.StatusOK {
		t.Fatalf("workshop after the restart: %d", code)
	}
	if st.Title != "Before the restart" || len(st.Participants) != 1 || st.Participants[0].LastRun == nil || st.Participants[0].LastRun.Variant != "session-set" {
		t.Errorf("workshop after the restart: %+v", st)
	}
}
