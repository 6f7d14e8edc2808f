package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// startHAProxy runs HAProxy with the repository's config in front of the
// instances at a and b (host:port) and returns its base URL once it
// answers; it skips the test when haproxy is not installed.
func startHAProxy(t *testing.T, a, b string) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy is not installed (scripts/setup-debian.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-db", "-f", "../../deploy/haproxy.cfg")
	cmd.Env = append(os.Environ(), "RLSLAB_LISTEN="+listen, "RLSLAB_A="+a, "RLSLAB_B="+b)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := "http://" + listen
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		if resp, err := c.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not answer within 30s; its output:\n%s", out.String())
		}
		time.Sleep(wait)
	}
}

// firstFrame opens a lab's live view at base and returns its first frame.
func firstFrame(t *testing.T, base, id string) string {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	u := "ws" + strings.TrimPrefix(base, "http") + "/labs/" + id + "/ws"
	conn, resp, err := d.Dial(u, http.Header{"Origin": {base}})
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Errorf("live view of %s at %s: %v (%d)", id, base, err, code)
		return ""
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		t.Errorf("live view of %s at %s: %v", id, base, err)
	}
	return string(msg)
}

// TestTwoInstancesBehindHAProxy runs two rlslab instances on one server
// behind HAProxy with deploy/haproxy.cfg. Labs are made on both; a browser
// that asks for its lab again keeps it; each
// lab's page, state.json and live websocket work through HAProxy and
// through either instance directly (the other forwards); a workshop's
// dashboard, read through each of the three, lists participants who joined
// on both instances.
func TestTwoInstancesBehindHAProxy(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustServer(t)
	tmp := traversableTempDir(t)
	a := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", srv.URL, "-spares", "1", "-instance", uniqueName("a"), "-proxy-addr", "off")
	b := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", srv.URL, "-spares", "1", "-instance", uniqueName("b"), "-proxy-addr", "off")
	baseA, baseB := a.listening(t, 60*time.Second), b.listening(t, 60*time.Second)
	hp := startHAProxy(t, strings.TrimPrefix(baseA, "http://"), strings.TrimPrefix(baseB, "http://"))

	// Labs on both instances: made directly, and through HAProxy
	// (round-robin) until both tags were seen.
	idA, idB := newLab(t, client(t), baseA), newLab(t, client(t), baseB)
	if idA[:2] == idB[:2] {
		t.Fatalf("labs %s and %s of two instances have one tag", idA, idB)
	}
	ids := []string{idA, idB}
	tags := map[string]bool{}
	for i := 0; i < 6 && len(tags) < 2; i++ {
		id := newLab(t, client(t), hp)
		tags[id[:2]] = true
		ids = append(ids, id)
	}
	if len(tags) != 2 {
		t.Errorf("labs made through HAProxy all on one instance: %v", ids)
	}
	// A browser asking again (as each lesson page does) reaches the
	// instance that knows its lab, and keeps it.
	learner := client(t)
	mine := newLab(t, learner, hp)
	for range 4 {
		if again := newLab(t, learner, hp); again != mine {
			t.Errorf("POST /labs through HAProxy again: lab %s, want the browser's %s", again, mine)
		}
	}

	c := client(t)
	for _, id := range ids {
		for _, base := range []string{hp, baseA, baseB} {
			if code, body := call(t, c, "GET", base+"/labs/"+id, "", ""); code != http.StatusOK {
				t.Errorf("GET %s/labs/%s: %d %.200s", base, id, code, body)
			}
			code, body := call(t, c, "GET", base+"/labs/"+id+"/state.json", "", "")
			var st struct{ Lab string }
			if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || st.Lab != id {
				t.Errorf("GET %s/labs/%s/state.json: %d %.200s", base, id, code, body)
			}
			if f := firstFrame(t, base, id); !strings.Contains(f, "<") {
				t.Errorf("live view of %s at %s: first frame %.200q", id, base, f)
			}
		}
	}

	// A workshop made through HAProxy; one participant joins on each
	// instance.
	fac := client(t)
	var w struct {
		ID, Code       string
		FacilitatorURL string `json:"facilitator_url"`
	}
	if code := callJSON(t, fac, "POST", hp+"/workshops", `{"title":"two instances","lessons":["set-leak"]}`, &w); code != http.StatusCreated {
		t.Fatalf("POST /workshops: %d", code)
	}
	for i, base := range []string{baseA, baseB} {
		var j struct{ Lab string }
		name := fmt.Sprintf("participant on %c", 'A'+i)
		if code := callJSON(t, client(t), "POST", base+"/workshops/"+w.ID+"/join?code="+w.Code, `{"name":"`+name+`"}`, &j); code != http.StatusCreated {
			t.Fatalf("join on %s: %d", base, code)
		}
	}
	if code, _ := call(t, fac, "GET", w.FacilitatorURL, "", ""); code != http.StatusSeeOther {
		t.Fatalf("facilitator link: %d", code)
	}
	for _, base := range []string{hp, baseA, baseB} {
		var board struct {
			Participants []struct{ Name, Lab, Status string }
		}
		if code := callJSON(t, fac, "GET", base+"/workshops/"+w.ID+"/state.json", "", &board); code != http.StatusOK {
			t.Errorf("dashboard at %s: %d", base, code)
			continue
		}
		if len(board.Participants) != 2 {
			t.Errorf("dashboard at %s lists %+v, want both participants", base, board.Participants)
		}
		for _, p := range board.Participants {
			if p.Lab == "" || p.Status == "lab closed" || p.Status == "no lab" {
				t.Errorf("dashboard at %s: %+v", base, p)
			}
		}
	}
}

// waitFor calls ok with backoff until it returns true, or fails the test
// with what after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := 20 * time.Millisecond; !ok(); wait = min(2*wait, time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(wait)
	}
}

// TestTwoInstancesOnTwoServersBehindHAProxy runs two rlslab instances,
// each with the same two lab servers (-lab-db twice; rlslab's tables on
// the first), behind HAProxy with deploy/haproxy.cfg. Labs are made on
// both servers by both instances; every lab's page, state.json, live
// websocket and free play work through HAProxy and through either
// instance directly, and a run in a lab on the second server ends done. A
// workshop made through HAProxy that expects six is prepared on both
// instances (each keeps its share ready, and the dashboard read on either
// counts both); six participants, three joining on each instance, all get
// a lab at once, and the dashboard lists them all through HAProxy and
// through each instance.
func TestTwoInstancesOnTwoServersBehindHAProxy(t *testing.T) {
	t.Parallel()
	one, two := pgenvtest.MustStockServer(t), pgenvtest.MustStockServer(t)
	tmp := traversableTempDir(t)
	args := func(name string) []string {
		return []string{"-addr", "127.0.0.1:0", "-db", one.URL, "-lab-db", one.URL, "-lab-db", two.URL, "-spares", "-1",
			"-instance", uniqueName(name), "-proxy-addr", "off"}
	}
	a, b := startServeChild(t, tmp, args("a")...), startServeChild(t, tmp, args("b")...)
	baseA, baseB := a.listening(t, 90*time.Second), b.listening(t, 90*time.Second)
	hp := startHAProxy(t, strings.TrimPrefix(baseA, "http://"), strings.TrimPrefix(baseB, "http://"))
	ctx := context.Background()
	var dbs []*pgx.Conn
	for _, srv := range []string{one.URL, two.URL} {
		c, err := pgx.Connect(ctx, srv)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		dbs = append(dbs, c)
	}
	// serverOf returns which server holds lab id's database.
	serverOf := func(id string) int {
		t.Helper()
		for i, c := range dbs {
			var n int
			if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, "lab_"+id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				return i
			}
		}
		t.Fatalf("lab %s is on neither server", id)
		return -1
	}

	// Labs through HAProxy and directly, until each instance has made
	// one on each server.
	type made struct {
		id     string
		owner  *http.Client
		server int
	}
	var labs []made
	seen := map[string]bool{}
	for i := 0; i < 12 && len(seen) < 4; i++ {
		c := client(t)
		id := newLab(t, c, []string{baseA, baseB, hp}[i%3])
		s := serverOf(id)
		if key := fmt.Sprintf("%s/%d", id[:2], s); !seen[key] {
			seen[key] = true
			labs = append(labs, made{id, c, s})
		}
	}
	if len(seen) != 4 {
		t.Fatalf("labs by instance/server: %v, want each instance on each server", seen)
	}

	for _, l := range labs {
		if l.server == 1 {
			if code, body := call(t, l.owner, "POST", hp+"/labs/"+l.id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`); code != http.StatusAccepted {
				t.Fatalf("run in lab %s on the second server: %d %s", l.id, code, body)
			}
			var st engine.State
			waitFor(t, 2*time.Minute, "the run in lab "+l.id+" ends", func() bool {
				st = state(t, l.owner, hp, l.id)
				return st.Status != engine.StatusRunning && st.Status != engine.StatusQueued
			})
			if st.Status != engine.StatusDone || st.Outage != "" {
				t.Errorf("run in lab %s on the second server: %s %q %q", l.id, st.Status, st.Error, st.Outage)
			}
		}
		for _, base := range []string{hp, baseA, baseB} {
			if code, body := call(t, l.owner, "GET", base+"/labs/"+l.id, "", ""); code != http.StatusOK {
				t.Errorf("GET %s/labs/%s: %d %.200s", base, l.id, code, body)
			}
			if st := state(t, l.owner, base, l.id); st.Lab != l.id || st.Outage != "" || st.Server.MaxConnections != 100 {
				t.Errorf("state of %s at %s: lab %s, outage %q, server %+v", l.id, base, st.Lab, st.Outage, st.Server)
			}
			if f := firstFrame(t, base, l.id); !strings.Contains(f, "<") {
				t.Errorf("live view of %s at %s: first frame %.200q", l.id, base, f)
			}
			code, body := call(t, l.owner, "POST", base+"/labs/"+l.id+"/sql", "application/json", `{"sql":"SELECT count(*) FROM invoices","tenant":"Acme"}`)
			if code != http.StatusOK || !strings.Contains(body, "3") {
				t.Errorf("free play in %s (server %d) at %s: %d %.300s", l.id, l.server+1, base, code, body)
			}
		}
	}

	// A workshop that expects six, made through HAProxy: each instance
	// keeps its share ready, and either one's dashboard counts all.
	fac := client(t)
	var w struct {
		ID, Code       string
		FacilitatorURL string `json:"facilitator_url"`
	}
	if code := callJSON(t, fac, "POST", hp+"/workshops", `{"title":"two servers","lessons":["set-leak"],"expected":6}`, &w); code != http.StatusCreated {
		t.Fatalf("POST /workshops: %d", code)
	}
	if code, _ := call(t, fac, "GET", w.FacilitatorURL, "", ""); code != http.StatusSeeOther {
		t.Fatalf("facilitator link: %d", code)
	}
	for _, base := range []string{baseA, baseB} {
		waitFor(t, 2*time.Minute, base+" keeps its three of the workshop's labs ready", func() bool {
			var h struct{ Spares int }
			callJSON(t, client(t), "GET", base+"/healthz", "", &h)
			return h.Spares >= 3
		})
	}
	for _, base := range []string{baseA, baseB} {
		waitFor(t, 30*time.Second, "the dashboard at "+base+" counts six labs ready", func() bool {
			var st struct {
				Counts struct {
					LabsReady int `json:"labs_ready"`
				}
			}
			callJSON(t, fac, "GET", base+"/workshops/"+w.ID+"/state.json", "", &st)
			return st.Counts.LabsReady == 6
		})
	}
	var wg sync.WaitGroup
	for i := range 6 {
		base := []string{baseA, baseB}[i%2]
		wg.Go(func() {
			var j struct{ Lab string }
			code := callJSON(t, client(t), "POST", base+"/workshops/"+w.ID+"/join?code="+w.Code, fmt.Sprintf(`{"name":"participant %d"}`, i), &j)
			if code != http.StatusCreated || j.Lab == "" {
				t.Errorf("join %d on %s: %d %+v", i, base, code, j)
			}
		})
	}
	wg.Wait()
	for _, base := range []string{hp, baseA, baseB} {
		var board struct {
			Participants []struct{ Name, Lab, Status string }
		}
		if code := callJSON(t, fac, "GET", base+"/workshops/"+w.ID+"/state.json", "", &board); code != http.StatusOK {
			t.Errorf("dashboard at %s: %d", base, code)
			continue
		}
		tags := map[string]bool{}
		for _, p := range board.Participants {
			if p.Lab == "" || p.Status == "lab closed" || p.Status == "no lab" {
				t.Errorf("dashboard at %s: %+v", base, p)
				continue
			}
			tags[p.Lab[:2]] = true
		}
		if len(board.Participants) != 6 || len(tags) != 2 {
			t.Errorf("dashboard at %s lists %+v, want six participants on both instances", base, board.Participants)
		}
	}
}
