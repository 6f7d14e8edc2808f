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
func loadCompose(content []byte, profiles ...string) (*types.Project, error) {
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
		o.Profiles = profiles
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

// flagValues returns every argument after flag in cmd ("-lab-db x" or
// "-lab-db=x"), for a flag given more than once.
func flagValues(cmd []string, flag string) []string {
	var out []string
	for i := 0; i < len(cmd); i++ {
		rest := cmd[i:]
		v, ok := flagValue(rest[:min(2, len(rest))], flag)
		if ok && (rest[0] == flag || rest[0] == "-"+flag) {
			i++
		}
		if ok {
			out = append(out, v)
		}
	}
	return out
}

// checkMulti returns every inconsistency it finds in the multi profile's
// topology (p loaded with the profile on): two PostgreSQL servers, two
// instances that both make labs on both (-lab-db, once per server) and
// share rlslab's tables on the first, their proxies reachable by each
// other, and HAProxy in front of both with the repository's config.
func checkMulti(p *types.Project) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// The PostgreSQL servers, by service name.
	servers := map[string]types.ServiceConfig{}
	for name, s := range p.Services {
		if strings.HasPrefix(s.Image, "postgres:") {
			servers[name] = s
			if s.HealthCheck == nil || !slices.Contains(s.HealthCheck.Test, "pg_isready") {
				bad("%s: no pg_isready healthcheck", name)
			}
		}
	}
	if len(servers) != 2 {
		bad("multi profile: %d PostgreSQL services, want 2", len(servers))
	}
	hap, err := p.GetService("haproxy")
	if err != nil {
		bad("multi profile: %v", err)
		return problems
	}
	if !slices.ContainsFunc(hap.Volumes, func(v types.ServiceVolumeConfig) bool {
		return strings.HasSuffix(v.Source, "/deploy/haproxy.cfg") && v.Target == "/usr/local/etc/haproxy/haproxy.cfg"
	}) {
		bad("haproxy: does not mount deploy/haproxy.cfg as its config (volumes %+v)", hap.Volumes)
	}
	if env(hap, "RLSLAB_LISTEN") == "" {
		bad("haproxy: RLSLAB_LISTEN is not set")
	}
	// The instances, as HAProxy names them.
	seen := map[string]bool{}
	for _, key := range []string{"RLSLAB_A", "RLSLAB_B"} {
		host, port, err := net.SplitHostPort(env(hap, key))
		if err != nil {
			bad("haproxy: %s %q: %v", key, env(hap, key), err)
			continue
		}
		inst, err := p.GetService(host)
		if err != nil {
			bad("haproxy: %s names %q, not a service of the multi profile", key, host)
			continue
		}
		if seen[host] {
			bad("haproxy: RLSLAB_A and RLSLAB_B are both %s", host)
		}
		seen[host] = true
		if _, ok := hap.DependsOn[host]; !ok {
			bad("haproxy: does not depend on %s", host)
		}
		addr, _ := flagValue(inst.Command, "-addr")
		if _, p, err := net.SplitHostPort(addr); err != nil || p != port {
			bad("%s: -addr %q does not listen on the port HAProxy uses (%s)", host, addr, port)
		}
		if proxy, ok := flagValue(inst.Command, "-proxy-addr"); !ok {
			bad("%s: no -proxy-addr: the other instance cannot forward an app's connection to its proxy on loopback", host)
		} else if h, _, err := net.SplitHostPort(proxy); err != nil || h == "localhost" || net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback() {
			bad("%s: -proxy-addr %q is not reachable from the other instance", host, proxy)
		}
		// -lab-db once for each PostgreSQL service, with its credentials.
		labDBs := flagValues(inst.Command, "-lab-db")
		got := map[string]int{}
		for _, raw := range labDBs {
			u, err := url.Parse(raw)
			if err != nil {
				bad("%s: -lab-db %q does not parse", host, raw)
				continue
			}
			pg, ok := servers[u.Hostname()]
			if !ok {
				bad("%s: -lab-db names host %q, not a PostgreSQL service", host, u.Hostname())
				continue
			}
			got[u.Hostname()]++
			checkURL(bad, host+" -lab-db", raw, u.Hostname(), "5432", env(pg, "POSTGRES_USER"), env(pg, "POSTGRES_PASSWORD"), env(pg, "POSTGRES_DB"))
			if dep, ok := inst.DependsOn[u.Hostname()]; !ok || dep.Condition != types.ServiceConditionHealthy {
				bad("%s: does not wait for %s to be healthy", host, u.Hostname())
			}
		}
		for name := range servers {
			if got[name] != 1 {
				bad("%s: -lab-db names %s %d times, want once", host, name, got[name])
			}
		}
		// rlslab's own tables are on the server of DATABASE_URL, one of them.
		if u, err := url.Parse(env(inst, "DATABASE_URL")); err != nil || servers[u.Hostname()].Name == "" {
			bad("%s: DATABASE_URL %q is not on a PostgreSQL service", host, env(inst, "DATABASE_URL"))
		}
	}
	if len(seen) == 2 {
		var tables []string
		for name := range seen {
			s, _ := p.GetService(name)
			tables = append(tables, env(s, "DATABASE_URL"))
		}
		if tables[0] != tables[1] {
			bad("the two instances keep rlslab's tables on different servers (%q, %q): they must share them", tables[0], tables[1])
		}
	}
	return problems
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
	multi, err := loadCompose([]byte(compose), "multi")
	if err != nil {
		t.Fatalf("%s with the multi profile does not load: %v", composeFile, err)
	}
	for _, problem := range checkMulti(multi) {
		t.Error("multi profile: " + problem)
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
			{"      pgbouncer:\n        condition: service_started\n\n", "\n"},
			{"      pgbouncer:\n        condition: service_started\n    restart", "    restart"},
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
		{"DATABASE_URL wrong host", composeFile, []edit{{"DATABASE_URL: postgres://rlslab:rlslab@postgres:5432", "DATABASE_URL: postgres://rlslab:rlslab@localhost:5432"}}},
		{"DATABASE_URL wrong port", composeFile, []edit{{"DATABASE_URL: postgres://rlslab:rlslab@postgres:5432", "DATABASE_URL: postgres://rlslab:rlslab@postgres:5433"}}},
		{"DATABASE_URL wrong user", composeFile, []edit{{"DATABASE_URL: postgres://rlslab:", "DATABASE_URL: postgres://app:"}}},
		{"DATABASE_URL wrong password", composeFile, []edit{{"DATABASE_URL: postgres://rlslab:rlslab@", "DATABASE_URL: postgres://rlslab:secret@"}}},
		{"DATABASE_URL wrong database", composeFile, []edit{{"@postgres:5432/rlslab?sslmode=disable\n      PGBOUNCER", "@postgres:5432/other?sslmode=disable\n      PGBOUNCER"}}},
		{"POSTGRES_DB changed alone", composeFile, []edit{{"POSTGRES_DB: rlslab\n    # Labs", "POSTGRES_DB: other\n    # Labs"}}},
		{"no dependency on postgres", composeFile, []edit{{"    depends_on:\n      postgres:\n        condition: service_healthy\n      pgbouncer:", "    depends_on:\n      pgbouncer:"}}},
		{"postgres dependency not healthy", composeFile, []edit{{"      postgres:\n        condition: service_healthy\n      pgbouncer:", "      postgres:\n        condition: service_started\n      pgbouncer:"}}},
		{"no postgres healthcheck", composeFile, []edit{{"first-time init the image runs a temporary server on the\n      # Unix socket only; checking over TCP waits for the real server.\n      test: [\"CMD\", \"pg_isready\",", "first-time init the image runs a temporary server on the\n      # Unix socket only; checking over TCP waits for the real server.\n      test: [\"CMD\", \"true\","}}},
		{"pgbouncer upstream wrong", composeFile, []edit{{"DB_HOST: postgres", "DB_HOST: localhost"}}},
		{"pgbouncer session mode", composeFile, []edit{{"POOL_MODE: transaction", "POOL_MODE: session"}}},
		{"PGBOUNCER_URL wrong host", composeFile, []edit{{"rlslab@pgbouncer:5432", "rlslab@postgres:5432"}}},
		{"PGBOUNCER_URL wrong port", composeFile, []edit{{"rlslab@pgbouncer:5432", "rlslab@pgbouncer:6432"}}},
		{"Dockerfile builds another package", dockerfileFile, []edit{{"./cmd/rlslab", "./cmd/other"}}},
		{"Dockerfile exposes another port", dockerfileFile, []edit{{"EXPOSE 8080", "EXPOSE 9090"}}},
		{"multi: one PostgreSQL only", composeFile, []edit{{"  postgres-b:\n    profiles: [\"multi\"]\n    image: postgres:15", "  postgres-b:\n    profiles: [\"multi\"]\n    image: busybox:1"}}},
		{"multi: second -lab-db missing", composeFile, []edit{{"      - -lab-db\n      - postgres://rlslab:rlslab@postgres-b:5432/rlslab?sslmode=disable\n", ""}}},
		{"multi: -lab-db on the first server twice", composeFile, []edit{{"@postgres-b:5432/rlslab?sslmode=disable\n", "@postgres:5432/rlslab?sslmode=disable\n"}}},
		{"multi: -lab-db wrong password", composeFile, []edit{{"      - postgres://rlslab:rlslab@postgres-b:", "      - postgres://rlslab:secret@postgres-b:"}}},
		{"multi: instance b makes labs on one server", composeFile, []edit{{"    command: *rlslab-multi-command\n", "    command: [\"serve\", \"-addr\", \"0.0.0.0:8080\", \"-proxy-addr\", \"0.0.0.0:5433\", \"-lab-db\", \"postgres://rlslab:rlslab@postgres:5432/rlslab?sslmode=disable\"]\n"}}},
		{"multi: proxy on loopback", composeFile, []edit{{"      - 0.0.0.0:5433\n", "      - 127.0.0.1:5433\n"}}},
		{"multi: not waiting for the second server", composeFile, []edit{{"      postgres-b:\n        condition: service_healthy\n", ""}}},
		{"multi: HAProxy without the repository's config", composeFile, []edit{{"./deploy/haproxy.cfg:", "./haproxy.cfg:"}}},
		{"multi: HAProxy to one instance twice", composeFile, []edit{{"RLSLAB_B: rlslab-b:8080", "RLSLAB_B: rlslab-a:8080"}}},
		{"multi: HAProxy to the wrong port", composeFile, []edit{{"RLSLAB_A: rlslab-a:8080", "RLSLAB_A: rlslab-a:9090"}}},
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
			multi, err := loadCompose([]byte(c), "multi")
			if err != nil {
				t.Logf("caught by the loader (multi profile): %v", err)
				return
			}
			problems = append(problems, checkMulti(multi)...)
			if len(problems) == 0 {
				t.Fatalf("checks did not notice: %s", m.name)
			}
			t.Logf("caught: %s", strings.Join(problems, "; "))
		})
	}
}
