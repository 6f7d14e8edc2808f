// Command pgshared runs a command (typically go test ./...) with one
// PostgreSQL started for it and named in DATABASE_URL, so that the test
// packages share one server instead of starting one each:
//
//	go run ./internal/pgenv/pgenvtest/pgshared go test -count=1 ./...
//
// Each test binary gets a database of its own on it (see pgenvtest), so
// their own tables do not meet. The server is stopped when the command
// ends, and pgshared exits with the command's status.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/rlslab/rlslab/internal/pgenv"
)

// maxConnections leaves room for the packages that go test runs at once.
const maxConnections = 800

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pgshared COMMAND [ARG...]")
		os.Exit(2)
	}
	os.Exit(run(os.Args[1:]))
}

// run starts the server, runs args with DATABASE_URL set, stops the server
// and returns the command's exit status.
func run(args []string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	pg, err := pgenv.Start(ctx, pgenv.Options{DB: "auto", MaxConnections: maxConnections, Logger: log})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgshared:", err)
		return 1
	}
	defer pg.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The TCP URL with a password: PgBouncer, run by the tests as another
	// user, reaches it too.
	cmd.Env = append(os.Environ(), "DATABASE_URL="+pg.TCPURL)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "pgshared:", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return ee.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "pgshared:", err)
		return 1
	}
}
