// Package engine is the scenario engine: scripted, repeatable sequences
// of simulated application requests against a lab's sandbox database, an
// instrumented pool that reads every connection's identity from its own
// backend, and the live state those events build.
package engine

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/rlslab/rlslab"
)

// Variant is one way of running a scenario: usually the wrong way or a right
// way.
type Variant struct {
	Name    string `json:"name"`
	Summary string `json:"summary"`
	// Run plays the variant against env's sandbox, pacing each frame with
	// env.Step. It returns when the variant is over; env's pools stay open
	// so the final state can be inspected, until env.Close.
	Run func(ctx context.Context, env *Env) error `json:"-"`
	// Conns says how many PostgreSQL connections a run of the variant with
	// parameters p holds at most in sb's database at once: its pools, its
	// crowd, a PgBouncer's server connections, the lab's superuser
	// connection and any other direct connection. Nil means the scenario's
	// Conns.
	Conns func(p Params, sb Sandbox) int `json:"-"`
	// Shared says that a run of the variant is a crowd that learners on
	// one server share: while a run of it with the same parameters is going
	// for real in one lab, a run started in another lab on the same server
	// follows that run's states instead of starting a crowd of its own
	// (package sessions). Its outcome must not depend on the lab it runs in.
	Shared bool `json:"shared,omitempty"`
}

// Fixed returns a Conns function for a variant that always needs n
// connections.
func Fixed(n int) func(Params, Sandbox) int {
	return func(Params, Sandbox) int { return n }
}

// Param is a bounded integer knob of a scenario (pool size, crowd size,
// delay in milliseconds).
type Param struct {
	Name    string `json:"name"`
	Summary string `json:"summary"`
	Min     int    `json:"min"`
	Max     int    `json:"max"`
	Default int    `json:"default"`
}

// Params are the validated parameter values of one run.
type Params map[string]int

// Get returns the value of the named parameter.
func (p Params) Get(name string) int { return p[name] }

// Scenario is a scripted sequence of requests and checks with variants.
type Scenario struct {
	ID       string    `json:"id"`
	Title    string    `json:"title"`
	Variants []Variant `json:"variants"`
	Params   []Param   `json:"params,omitempty"`
	// MinTenants is how many seeded tenants the scenario needs; Play
	// refuses to run it in a sandbox with fewer.
	MinTenants int `json:"-"`
	// Conns is the connection need of the variants that declare none.
	Conns func(p Params, sb Sandbox) int `json:"-"`
	// Pacing says whether a run at a teaching pace may run at full speed
	// and be shown at that pace (PacingReplay) or plays live (PacingLive,
	// and LiveWhy says why). A scenario that says neither plays live.
	Pacing  Pacing `json:"pacing,omitempty"`
	LiveWhy string `json:"live_why,omitempty"`
}

// Defaults returns a copy of p in which every parameter of the scenario
// that p lacks has its default value.
func (s *Scenario) Defaults(p Params) Params {
	out := make(Params, len(p)+len(s.Params))
	for _, d := range s.Params {
		out[d.Name] = d.Default
	}
	for k, v := range p {
		out[k] = v
	}
	return out
}

// Need returns how many PostgreSQL connections a run of variant with
// parameters p may hold at most at once in sb's database; parameters that p
// lacks take their defaults. The lab manager admits runs against the
// server's connection budget with it. An unknown variant needs 0.
func (s *Scenario) Need(variant string, p Params, sb Sandbox) int {
	v, ok := s.Variant(variant)
	if !ok {
		return 0
	}
	f := v.Conns
	if f == nil {
		f = s.Conns
	}
	if f == nil {
		return 0
	}
	return f(s.Defaults(p), sb)
}

// Variant returns the variant called name.
func (s *Scenario) Variant(name string) (Variant, bool) {
	for _, v := range s.Variants {
		if v.Name == name {
			return v, true
		}
	}
	return Variant{}, false
}

// HasVariant reports whether the scenario has a variant with that name.
func (s *Scenario) HasVariant(name string) bool {
	for _, v := range s.Variants {
		if v.Name == name {
			return true
		}
	}
	return false
}

// VariantNames returns the names of the scenario's variants in order.
func (s *Scenario) VariantNames() []string {
	out := make([]string, len(s.Variants))
	for i, v := range s.Variants {
		out[i] = v.Name
	}
	return out
}

// CheckVariant returns an EINVALID error when the scenario has no such
// variant.
func (s *Scenario) CheckVariant(name string) error {
	if s.HasVariant(name) {
		return nil
	}
	return rlslab.Errorf(rlslab.EINVALID, "scenario %s has no variant %q (variants: %s)", s.ID, name, strings.Join(s.VariantNames(), ", "))
}

// ParseParams validates raw parameter values against the scenario's Params:
// unknown names and values out of bounds are EINVALID errors; missing ones
// take their defaults.
func (s *Scenario) ParseParams(raw map[string]string) (Params, error) {
	out := Params{}
	known := map[string]Param{}
	for _, p := range s.Params {
		known[p.Name] = p
		out[p.Name] = p.Default
	}
	names := make([]string, 0, len(raw))
	for k := range raw {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		p, ok := known[k]
		if !ok {
			return nil, rlslab.Errorf(rlslab.EINVALID, "scenario %s has no parameter %q", s.ID, k)
		}
		v, err := strconv.Atoi(strings.TrimSpace(raw[k]))
		if err != nil || v < p.Min || v > p.Max {
			return nil, rlslab.Errorf(rlslab.EINVALID, "parameter %s=%q: want a whole number from %d to %d", k, raw[k], p.Min, p.Max)
		}
		out[k] = v
	}
	return out, nil
}

// Catalog is the set of scenarios rlslab knows, in display order.
type Catalog struct {
	list []*Scenario
	byID map[string]*Scenario
}

// NewCatalog returns a catalog of the given scenarios; ids must be unique,
// and every variant needs a name, a Run function and a connection need (its
// own Conns or the scenario's).
func NewCatalog(list ...*Scenario) (*Catalog, error) {
	c := &Catalog{byID: map[string]*Scenario{}}
	for _, s := range list {
		if s.ID == "" || len(s.Variants) == 0 {
			return nil, fmt.Errorf("scenario %q: needs an id and variants", s.ID)
		}
		for _, v := range s.Variants {
			if v.Name == "" || v.Run == nil {
				return nil, fmt.Errorf("scenario %q: variant %q needs a name and a Run function", s.ID, v.Name)
			}
			if v.Conns == nil && s.Conns == nil {
				return nil, fmt.Errorf("scenario %q: variant %q declares no connection need", s.ID, v.Name)
			}
		}
		if _, dup := c.byID[s.ID]; dup {
			return nil, fmt.Errorf("scenario %q registered twice", s.ID)
		}
		c.byID[s.ID] = s
		c.list = append(c.list, s)
	}
	return c, nil
}

// All returns the scenarios in display order.
func (c *Catalog) All() []*Scenario { return append([]*Scenario(nil), c.list...) }

// Lookup returns the scenario with that id, or an EINVALID error naming the known ones.
func (c *Catalog) Lookup(id string) (*Scenario, error) {
	if s, ok := c.byID[id]; ok {
		return s, nil
	}
	ids := make([]string, len(c.list))
	for i, s := range c.list {
		ids[i] = s.ID
	}
	return nil, rlslab.Errorf(rlslab.EINVALID, "unknown scenario %q (scenarios: %s)", id, strings.Join(ids, ", "))
}

// Variants returns the variant names of scenario id and whether it exists
// (the lessons loader validates against this).
func (c *Catalog) Variants(id string) ([]string, bool) {
	s, ok := c.byID[id]
	if !ok {
		return nil, false
	}
	return s.VariantNames(), true
}
