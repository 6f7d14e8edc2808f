package rlslab_test

// No Docker engine is needed (or available) to run these tests: they load
// docker-compose.yml with the Compose Specification's own loader and check
// that the services are wired to each other consistently, and that the
// Dockerfile builds the binary and exposes the port the compose file uses.

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

const (
	composeFile    = "docker-compose.yml"
	dockerfileFile = "Dockerfile"
)

// loadCompose parses and validates compose content the way `docker compose`
// does, with an empty environment so the host's variables cannot change it.
func loadCompose(content []byte) (*types.Project, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	details := types.ConfigDetails{
		WorkingDir:  wd,
		ConfigFiles: []types.ConfigFile{{Filename: composeFile, Content: content}},
		Environment: types.Mapping{},
	}
	return loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName("rlslab", true)
	})
}

// env returns a service's environment variable, "" if unset.
func env(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

// flagValue returns the argument after flag in cmd ("-addr x" or "-addr=x").
func flagValue(cmd []string, flag string) (string, bool) {
	for i, a := range cmd {
		if a == flag || a == "-"+flag {
			if i+1 < len(cmd) {
				return cmd[i+1], true
			}
			return "", false
		}
		for _, p := range []string{flag + "=", "-" + flag + "="} {
			if v, ok := strings.CutPrefix(a, p); ok {
				return v, true
			}
		}
	}
	return "", false
}

// checkDeployment returns every inconsistency it finds between the compose
// project and the Dockerfile; none means the stack is wired correctly.
func checkDeployment(p *types.Project, dockerfile string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	services := map[string]types.ServiceConfig{}
	for _, name := range []string{"postgres", "pgbouncer", "rlslab"} {
		s, err := p.GetService(name)
		if err != nil {
			bad("service %q: %v", name, err)
			continue
		}
		services[name] = s
	}
	pg, havePG := services["postgres"]
	bouncer, haveBouncer := services["pgbouncer"]
	app, haveApp := services["rlslab"]

	if havePG {
		for _, k := range []string{"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} {
			if env(pg, k) == "" {
				bad("postgres: %s is not set", k)
			}
		}
		if pg.HealthCheck == nil || !slices.Contains(pg.HealthCheck.Test, "pg_isready") {
			bad("postgres: no pg_isready healthcheck (rlslab waits for service_healthy)")
		}
	}

	// The port rlslab listens on inside its container, from -addr.
	var targetPort string
	if haveApp {
		var targets []string
		for _, port := range app.Ports {
			if port.Published == "8080" {
				targets = append(targets, strconv.FormatUint(uint64(port.Target), 10))
			}
		}
		if len(targets) != 1 {
			bad("rlslab: want exactly one port published on 8080, got ports %+v", app.Ports)
		} else {
			targetPort = targets[0]
		}
		addr, ok := flagValue(app.Command, "-addr")
		if !ok {
			bad("rlslab: command %q has no -addr (its default 127.0.0.1 is unreachable from outside the container)", app.Command)
		} else if host, port, err := net.SplitHostPort(addr); err != nil {
			bad("rlslab: -addr %q: %v", addr, err)
		} else {
			if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
				bad("rlslab: -addr %q listens on loopback, unreachable through the published port", addr)
			}
			if targetPort != "" && port != targetPort {
				bad("rlslab: -addr port %s differs from the published target port %s", port, targetPort)
			}
		}

		if havePG {
			checkURL(bad, "rlslab DATABASE_URL", env(app, "DATABASE_URL"), "postgres", "5432",
				env(pg, "POSTGRES_USER"), env(pg, "POSTGRES_PASSWORD"), env(pg, "POSTGRES_DB"))
		}
		if dep, ok := app.DependsOn["postgres"]; !ok {
			bad("rlslab: does not depend on postgres")
		} else if dep.Condition != types.ServiceConditionHealthy {
			bad("rlslab: depends on postgres with condition %q, want %q", dep.Condition, types.ServiceConditionHealthy)
		}
	}

	if haveBouncer {
		// edoburu/pgbouncer takes its upstream from DB_HOST/DB_PORT.
		if h := env(bouncer, "DB_HOST"); h != "postgres" {
			bad("pgbouncer: upstream DB_HOST is %q, want the postgres service", h)
		}
		if port := env(bouncer, "DB_PORT"); port != "" && port != "5432" {
			bad("pgbouncer: upstream DB_PORT is %q, want 5432", port)
		}
		if havePG && env(bouncer, "DB_USER") != env(pg, "POSTGRES_USER") {
			bad("pgbouncer: DB_USER %q differs from POSTGRES_USER %q", env(bouncer, "DB_USER"), env(pg, "POSTGRES_USER"))
		}
		if havePG && env(bouncer, "DB_PASSWORD") != env(pg, "POSTGRES_PASSWORD") {
			bad("pgbouncer: DB_PASSWORD differs from POSTGRES_PASSWORD")
		}
		if m := env(bouncer, "POOL_MODE"); m != "transaction" {
			bad("pgbouncer: POOL_MODE is %q, want transaction", m)
		}
		if haveApp && havePG {
			listen := env(bouncer, "LISTEN_PORT")
			if listen == "" {
				listen = "5432" // the image's default
			}
			checkURL(bad, "rlslab PGBOUNCER_URL", env(app, "PGBOUNCER_URL"), "pgbouncer", listen,
				env(pg, "POSTGRES_USER"), env(pg, "POSTGRES_PASSWORD"), env(pg, "POSTGRES_DB"))
		}
	}

	if !regexp.MustCompile(`(?m)^RUN .*go build .*\./cmd/rlslab\b`).MatchString(dockerfile) {
		bad("Dockerfile: no RUN ... go build ... ./cmd/rlslab")
	}
	exposed := regexp.MustCompile(`(?m)^EXPOSE\s+(\d+)`).FindAllStringSubmatch(dockerfile, -1)
	var ports []string
	for _, m := range exposed {
		ports = append(ports, m[1])
	}
	if targetPort != "" && !slices.Contains(ports, targetPort) {
		bad("Dockerfile: EXPOSE %v does not include rlslab's target port %s", ports, targetPort)
	}
	return problems
}

// checkURL checks that raw is a postgres URL for host:port with the given
// credentials and database.
func checkURL(bad func(string, ...any), what, raw, host, port, user, password, db string) {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		bad("%s %q does not parse: %v", what, raw, err)
		return
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		bad("%s: scheme %q, want postgres", what, u.Scheme)
	}
	if u.Hostname() != host {
		bad("%s: host %q, want %q (the service name)", what, u.Hostname(), host)
	}
	if u.Port() != port {
		bad("%s: port %q, want %q", what, u.Port(), port)
	}
	gotPassword, _ := u.User.Password()
	if u.User.Username() != user || gotPassword != password {
		bad("%s: credentials %q do not match POSTGRES_USER/POSTGRES_PASSWORD", what, u.User.Username())
	}
	if got := strings.TrimPrefix(u.Path, "/"); got != db {
		bad("%s: database %q, want POSTGRES_DB %q", what, got, db)
	}
}

func readDeploymentFiles(t *testing.T) (compose, dockerfile string) {
	t.Helper()
	c, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := os.ReadFile(dockerfileFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(c), string(d)
}

func TestComposeWiring(t *testing.T) {
	compose, dockerfile := readDeploymentFiles(t)
	p, err := loadCompose([]byte(compose))
	if err != nil {
		t.Fatalf("%s does not load: %v", composeFile, err)
	}
	for _, problem := range checkDeployment(p, dockerfile) {
		t.Error(problem)
	}
}

// TestComposeChecksCatchMistakes breaks the real files one way at a time and
// requires checkDeployment (or the loader) to notice, so that no check above
// passes vacuously.
func TestComposeChecksCatchMistakes(t *testing.T) {
	compose, dockerfile := readDeploymentFiles(t)
	type edit struct{ old, new string }
	mutations := []struct {
		name, file string
		edits      []edit
	}{
		{"rlslab service missing", composeFile, []edit{{"\n  rlslab:\n", "\n  rlslab-app:\n"}}},
		{"pgbouncer service missing", composeFile, []edit{
			{"\n  pgbouncer:\n    image:", "\n  bouncer:\n    image:"},
			{"      pgbouncer:\n        condition: service_started\n", ""},
		}},
		{"postgres service missing", composeFile, []edit{
			{"\n  postgres:\n    image:", "\n  db:\n    image:"},
			{"    depends_on:\n      postgres:\n        condition: service_healthy\n\n", "\n"},
			{"      postgres:\n        condition: service_healthy\n      pgbouncer:", "      pgbouncer:"},
		}},
		{"published target differs from -addr", composeFile, []edit{{`"8080:8080"`, `"8080:9090"`}}},
		{"-addr port differs from target", composeFile, []edit{{`"-addr", "0.0.0.0:8080"`, `"-addr", "0.0.0.0:8081"`}}},
		{"-addr on loopback", composeFile, []edit{{`"-addr", "0.0.0.0:8080"`, `"-addr", "127.0.0.1:8080"`}}},
		{"no -addr", composeFile, []edit{{`["serve", "-addr", "0.0.0.0:8080"]`, `["serve"]`}}},
		{"DATABASE_URL wrong host", composeFile, []edit{{"rlslab@postgres:5432", "rlslab@localhost:5432"}}},
		{"DATABASE_URL wrong port", composeFile, []edit{{"rlslab@postgres:5432", "rlslab@postgres:5433"}}},
		{"DATABASE_URL wrong user", composeFile, []edit{{"DATABASE_URL: postgres://rlslab:", "DATABASE_URL: postgres://app:"}}},
		{"DATABASE_URL wrong password", composeFile, []edit{{"DATABASE_URL: postgres://rlslab:rlslab@", "DATABASE_URL: postgres://rlslab:secret@"}}},
		{"DATABASE_URL wrong database", composeFile, []edit{{"postgres:5432/rlslab?", "postgres:5432/other?"}}},
		{"POSTGRES_DB changed alone", composeFile, []edit{{"POSTGRES_DB: rlslab", "POSTGRES_DB: other"}}},
		{"no dependency on postgres", composeFile, []edit{{"    depends_on:\n      postgres:\n        condition: service_healthy\n      pgbouncer:", "    depends_on:\n      pgbouncer:"}}},
		{"postgres dependency not healthy", composeFile, []edit{{"      postgres:\n        condition: service_healthy\n      pgbouncer:", "      postgres:\n        condition: service_started\n      pgbouncer:"}}},
		{"no postgres healthcheck", composeFile, []edit{{`test: ["CMD", "pg_isready",`, `test: ["CMD", "true",`}}},
		{"pgbouncer upstream wrong", composeFile, []edit{{"DB_HOST: postgres", "DB_HOST: localhost"}}},
		{"pgbouncer session mode", composeFile, []edit{{"POOL_MODE: transaction", "POOL_MODE: session"}}},
		{"PGBOUNCER_URL wrong host", composeFile, []edit{{"rlslab@pgbouncer:5432", "rlslab@postgres:5432"}}},
		{"PGBOUNCER_URL wrong port", composeFile, []edit{{"rlslab@pgbouncer:5432", "rlslab@pgbouncer:6432"}}},
		{"Dockerfile builds another package", dockerfileFile, []edit{{"./cmd/rlslab", "./cmd/other"}}},
		{"Dockerfile exposes another port", dockerfileFile, []edit{{"EXPOSE 8080", "EXPOSE 9090"}}},
	}
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			c, d := compose, dockerfile
			target := &c
			if m.file == dockerfileFile {
				target = &d
			}
			for _, e := range m.edits {
				if n := strings.Count(*target, e.old); n != 1 {
					t.Fatalf("mutation no longer applies: %q occurs %d times in %s", e.old, n, m.file)
				}
				*target = strings.Replace(*target, e.old, e.new, 1)
			}
			p, err := loadCompose([]byte(c))
			if err != nil {
				t.Logf("caught by the loader: %v", err)
				return
			}
			problems := checkDeployment(p, d)
			if len(problems) == 0 {
				t.Fatalf("checks did not notice: %s", m.name)
			}
			t.Logf("caught: %s", strings.Join(problems, "; "))
		})
	}
}
