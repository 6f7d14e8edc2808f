package pgenvtest_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

func TestSharedServer(t *testing.T) {
	t.Parallel()
	s1 := pgenvtest.MustServer(t)
	s2 := pgenvtest.MustServer(t)
	if s1 != s2 {
		t.Fatal("MustServer returned two servers")
	}
	pool := pgenvtest.MustConnect(t)
	if got := pool.Config().MaxConns; got != 4 {
		t.Errorf("MaxConns = %d, want 4", got)
	}
	var maxConns string
	if err := pool.QueryRow(context.Background(), "SHOW max_connections").Scan(&maxConns); err != nil {
		t.Fatal(err)
	}
	if s1.Kind != "url" && maxConns != "400" {
		t.Errorf("max_connections = %s, want 400", maxConns)
	}
}

func TestConnectInParallel(t *testing.T) {
	t.Parallel()
	for range 3 {
		t.Run("sub", func(t *testing.T) {
			t.Parallel()
			var one int
			if err := pgenvtest.MustConnect(t).QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("SELECT 1 = %d, %v", one, err)
			}
		})
	}
}

// TestSharedAcrossBinaries runs this test binary twice at once, as go test
// runs two packages (this process standing for the go command): both get
// the same server, each a database of its own, and once both are done the
// keeper stops the server and removes its directory.
func TestSharedAcrossBinaries(t *testing.T) {
	if os.Getenv("DATABASE_URL") != "" || os.Getenv("RLSLAB_PGENVTEST_SHARED") == "0" {
		t.Skip("the binaries use DATABASE_URL, or a server each")
	}
	t.Parallel()
	type seen struct{ Addr, DB, out string }
	out := make(chan seen, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestReportServer$", "-test.v")
			cmd.Env = append(os.Environ(), "PGENVTEST_REPORT=1", "RLSLAB_PGENVTEST_LINGER=100ms")
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("%v\n%s", err, b)
				return
			}
			_, line, ok := strings.Cut(string(b), "SERVER ")
			line, _, _ = strings.Cut(line, "\n")
			addr, db, _ := strings.Cut(line, " ")
			if !ok || db == "" {
				t.Errorf("no server reported:\n%s", b)
				return
			}
			out <- seen{addr, db, string(b)}
		})
	}
	wg.Wait()
	close(out)
	var got []seen
	for s := range out {
		got = append(got, s)
	}
	if len(got) != 2 {
		return
	}
	if got[0].Addr != got[1].Addr || got[0].DB == got[1].DB {
		t.Errorf("two binaries of one run got %s/%s and %s/%s: want one server, a database each\nfirst:\n%s\nsecond:\n%s", got[0].Addr, got[0].DB, got[1].Addr, got[1].DB, got[0].out, got[1].out)
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("rlslab-pgenvtest-%d-%d", os.Getuid(), os.Getpid()))
	deadline := time.Now().Add(30 * time.Second)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still there 30 s after its last user", dir)
		}
		time.Sleep(wait) // the keeper stops on its own; nothing to wait on
	}
	conn, err := net.DialTimeout("tcp", got[0].Addr, time.Second)
	if err == nil {
		conn.Close()
		t.Errorf("the shared server at %s still answers after its keeper left", got[0].Addr)
	}
}

// TestReportServer prints the server's address and database, for
// TestSharedAcrossBinaries.
func TestReportServer(t *testing.T) {
	if os.Getenv("PGENVTEST_REPORT") == "" {
		t.Skip("run by TestSharedAcrossBinaries")
	}
	u, err := url.Parse(pgenvtest.MustServer(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("SERVER %s %s\n", u.Host, strings.TrimPrefix(u.Path, "/"))
}
