package scenarios_test

import (
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestLostContextVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")

	st := mustRun(t, lab, "lost-context", "background", nil)
	if st.Status != engine.StatusDone || len(st.Requests) != 2 {
		t.Fatalf("background: status %q (%s), requests %+v", st.Status, st.Error, st.Requests)
	}
	req, job := st.Requests[0], st.Requests[1]
	if req.Rows != 3 || req.Leak {
		t.Errorf("background: the handler's own request: %+v", req)
	}
	if job.Rows != 0 || job.Leak || job.Error != "" || job.SeenTenant == nil || *job.SeenTenant != "0" {
		t.Errorf("background: want Acme's job to run under tenant '0' and get 0 rows, got %+v", job)
	}
	if mustMetric(t, st, "jobs_without_tenant") != 1 {
		t.Errorf("background: jobs_without_tenant %v", mustMetric(t, st, "jobs_without_tenant"))
	}

	st = mustRun(t, lab, "lost-context", "worker-reuse", nil)
	if st.Status != engine.StatusDone || len(st.Requests) != 4 {
		t.Fatalf("worker-reuse: status %q (%s), requests %+v", st.Status, st.Error, st.Requests)
	}
	acmeJob, globexJob := st.Requests[1], st.Requests[3]
	if acmeJob.Rows != 3 || acmeJob.Leak {
		t.Errorf("worker-reuse: Acme's job: %+v", acmeJob)
	}
	if *globexJob.Tenant != "2" || !globexJob.Leak || globexJob.ForeignRows != 3 || globexJob.SeenTenant == nil || *globexJob.SeenTenant != "1" {
		t.Errorf("worker-reuse: want Globex's job to get Acme's 3 rows under '1', got %+v", globexJob)
	}
	if st.Leaks() != 1 || mustMetric(t, st, "jobs_without_tenant") != 1 {
		t.Errorf("worker-reuse: %d leaks, jobs_without_tenant %v", st.Leaks(), mustMetric(t, st, "jobs_without_tenant"))
	}

	st = mustRun(t, lab, "lost-context", "propagated", nil)
	if st.Status != engine.StatusDone || len(st.Requests) != 4 {
		t.Fatalf("propagated: status %q (%s), requests %+v", st.Status, st.Error, st.Requests)
	}
	for _, r := range st.Requests {
		if r.Rows != 3 || r.Leak || r.Error != "" || r.SeenTenant == nil || *r.SeenTenant != *r.Tenant {
			t.Errorf("propagated: want each request and job to get its own 3 rows, got %+v", r)
		}
	}
	if mustMetric(t, st, "jobs_without_tenant") != 0 {
		t.Errorf("propagated: jobs_without_tenant %v", mustMetric(t, st, "jobs_without_tenant"))
	}
}
