package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

// TestServeProxy: serve with -proxy-addr gives a lab's owner a URL through
// the proxy that logs in as the lab's app role, and shuts down with an app
// still connected.
func TestServeProxy(t *testing.T) {
	srv := pgenvtest.MustServer(t)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var logs lockedBuffer
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-proxy-addr", "127.0.0.1:0", "-db", srv.URL, "-max-labs", "2", "-spares", "-1"}, func(string) string { return "" }, pw, &logs)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("serve printed nothing: %v", <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "rlslab listening on ")
	if !ok {
		t.Fatalf("first line %q", line)
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 60 * time.Second}
	req, _ := http.NewRequest(http.MethodPost, base+"/labs", nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Origin", base)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var lab struct{ ID string }
	err = json.NewDecoder(resp.Body).Decode(&lab)
	resp.Body.Close()
	if err != nil || lab.ID == "" {
		t.Fatalf("POST /labs: %d %v", resp.StatusCode, err)
	}
	resp, err = client.Get(base + "/labs/" + lab.ID + "/connect.json")
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ URL string }
	err = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if err != nil || !strings.HasPrefix(c.URL, "postgres://app:") || !strings.Contains(c.URL, "/lab_"+lab.ID+"?sslmode=require") {
		t.Fatalf("connect.json: %d %q %v", resp.StatusCode, c.URL, err)
	}
	qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
	defer qcancel()
	conn, err := pgx.Connect(qctx, c.URL)
	if err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	var user string
	if err := conn.QueryRow(qctx, "SELECT current_user").Scan(&user); err != nil || user != "lab_"+lab.ID+"_app" {
		t.Errorf("current_user through the proxy: %q %v", user, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v after cancel", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not shut down with an app connected")
	}
	if _, err := conn.Exec(context.Background(), "SELECT 1"); err == nil {
		t.Error("the app's connection outlived serve")
	}
	if n, _, _ := leftovers(t, logs.String()); n != 0 {
		t.Errorf("%d lab databases left after shutdown", n)
	}
}
