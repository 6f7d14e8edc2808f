package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

// uniqueName returns prefix with a suffix no other test of this run uses
// (instances of parallel tests register in the same tables).
func uniqueName(prefix string) string {
	return prefix + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
}

// TestFaultSIGKILLOneOfTwoInstances runs two rlslab instances on one
// server. A learner on the second records a run and leaves a stepped run
// holding connections; the second instance is killed with SIGKILL. Within
// 30 s the first one has released the dead one's lease and registration
// and dropped its labs and roles; the learner, asking the first instance,
// gets a new lab, and their progress, prediction and recording are there.
func TestFaultSIGKILLOneOfTwoInstances(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustServer(t)
	tmp := traversableTempDir(t)
	nameA, nameB := uniqueName("survivor"), uniqueName("doomed")
	a := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", srv.URL, "-spares", "-1", "-instance", nameA, "-proxy-addr", "off")
	b := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", srv.URL, "-spares", "-1", "-instance", nameB, "-proxy-addr", "off")
	baseA, baseB := a.listening(t, 60*time.Second), b.listening(t, 60*time.Second)

	c := client(t)
	id := newLab(t, c, baseB)
	// The learner answers the lesson's question before the run that checks
	// it.
	if code, body := call(t, c, "POST", baseB+"/lessons/set-leak/predictions", "application/json", `{"variant":"session-set","choice":0}`); code != http.StatusOK {
		t.Fatalf("prediction: %d %s", code, body)
	}
	if code, body := call(t, c, "POST", baseB+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`); code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	var runs []struct{ ID string }
	deadline := time.Now().Add(60 * time.Second)
	for len(runs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the run was never recorded")
		}
		b.waitLine(t, 60*time.Second, "run recorded")
		callJSON(t, c, "GET", baseB+"/labs/"+id+"/runs.json", "", &runs)
	}
	// Progress is saved in the background too.
	var progress string
	for wait := 10 * time.Millisecond; !strings.Contains(progress, "session-set"); wait = min(2*wait, time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("progress never showed the run: %s", progress)
		}
		time.Sleep(wait)
		_, progress = call(t, c, "GET", baseB+"/progress.json", "", "")
	}
	// The run checked the prediction.
	type prediction struct {
		State, Picked, Actual string
		Correct               bool
	}
	var predicted prediction
	for wait := 10 * time.Millisecond; predicted.State != "checked"; wait = min(2*wait, time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("the run never checked the prediction: %+v", predicted)
		}
		time.Sleep(wait)
		if code := callJSON(t, c, "GET", baseB+"/lessons/set-leak/predictions/session-set", "", &predicted); code != http.StatusOK {
			t.Fatalf("the prediction after the run: %d", code)
		}
	}
	// Progress read again now that the prediction is checked: the first
	// read may have come between the run's end and the check.
	_, progress = call(t, c, "GET", baseB+"/progress.json", "", "")
	// A stepped run holds its connections (and the lease) until it ends.
	if code, body := call(t, c, "POST", baseB+"/labs/"+id+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"step"}`); code != http.StatusAccepted {
		t.Fatalf("stepped run: %d %s", code, body)
	}
	// A workshop participant whose lab the doomed instance runs.
	fac := client(t)
	var w struct {
		ID, Code       string
		FacilitatorURL string `json:"facilitator_url"`
	}
	if code := callJSON(t, fac, "POST", baseA+"/workshops", `{"title":"doomed","lessons":["set-leak"]}`, &w); code != http.StatusCreated {
		t.Fatalf("POST /workshops: %d", code)
	}
	if code := callJSON(t, client(t), "POST", baseB+"/workshops/"+w.ID+"/join?code="+w.Code, `{"name":"on the doomed one"}`, nil); code != http.StatusCreated {
		t.Fatalf("join: %d", code)
	}
	if code, _ := call(t, fac, "GET", w.FacilitatorURL, "", ""); code != http.StatusSeeOther {
		t.Fatalf("facilitator link: %d", code)
	}
	ctx := context.Background()
	db, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	leased := func() (conns int) {
		t.Helper()
		if err := db.QueryRow(ctx, `SELECT coalesce(sum(conns), 0) FROM rlslab.leases WHERE instance = $1`, nameB).Scan(&conns); err != nil {
			t.Fatal(err)
		}
		return conns
	}
	for wait := 10 * time.Millisecond; leased() <= 11; wait = min(2*wait, time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("the stepped run never leased connections; log:\n%s", b.log())
		}
		time.Sleep(wait)
	}
	t.Logf("%s leases %d connections", nameB, leased())

	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	err = <-b.exited
	b.exited <- err

	left := func() (instances, leases, dbs, roles int) {
		t.Helper()
		err := db.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM rlslab.instances WHERE name = $1),
			(SELECT count(*) FROM rlslab.leases WHERE instance = $1),
			(SELECT count(*) FROM pg_database WHERE datname = $2),
			(SELECT count(*) FROM pg_roles WHERE rolname LIKE $2 || '\_%')`, nameB, "lab_"+id).Scan(&instances, &leases, &dbs, &roles)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		i, l, d, r := left()
		if i+l+d+r == 0 {
			break
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("30 s after the SIGKILL: registrations %d, leases %d, databases %d, roles %d left; survivor's log:\n%s", i, l, d, r, a.log())
		}
		time.Sleep(wait)
	}
	t.Logf("the dead instance's lease, lab and roles were gone %s after the SIGKILL", time.Since(killed).Round(time.Millisecond))

	var board struct {
		Participants []struct{ Name, Status string }
	}
	if code := callJSON(t, fac, "GET", baseA+"/workshops/"+w.ID+"/state.json", "", &board); code != http.StatusOK || len(board.Participants) != 1 || board.Participants[0].Status != "reconnecting" {
		t.Errorf("the dashboard after the SIGKILL: %d %+v, want the participant reconnecting", code, board.Participants)
	}

	// The learner's next action reaches the survivor (as HAProxy sends it
	// once the dead one fails its checks).
	if code, body := call(t, c, "GET", baseA+"/labs/"+id+"/state.json", "", ""); code != http.StatusNotFound {
		t.Errorf("the dead instance's lab on the survivor: %d %s", code, body)
	}
	newID := newLab(t, c, baseA)
	if newID == id {
		t.Errorf("the survivor gave the dead lab's id %s", id)
	}
	if _, got := call(t, c, "GET", baseA+"/progress.json", "", ""); got != progress {
		t.Errorf("progress on the survivor:\n%s\nwant what the dead instance showed:\n%s", got, progress)
	}
	var kept prediction
	if code := callJSON(t, c, "GET", baseA+"/lessons/set-leak/predictions/session-set", "", &kept); code != http.StatusOK || kept != predicted {
		t.Errorf("the prediction on the survivor: %d %+v, want %+v", code, kept, predicted)
	}
	if code := callJSON(t, c, "GET", baseA+"/runs/"+runs[0].ID+".json", "", nil); code != http.StatusOK {
		t.Errorf("the recording on the survivor: %d", code)
	}
	if code, body := call(t, c, "POST", baseA+"/labs/"+newID+"/runs", "application/json", `{"scenario":"set-leak","variant":"session-set","speed":"max"}`); code != http.StatusAccepted {
		t.Errorf("a run in the new lab: %d %s", code, body)
	}
}
