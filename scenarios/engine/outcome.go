package engine

// Outcome is what a headless run prints (rlslab run -json): the request log
// and the counts of leaks and failed requests, what the run showed (its
// verdict's kind and headline), plus timings where the scenario measures
// them.
type Outcome struct {
	Scenario string             `json:"scenario"`
	Variant  string             `json:"variant"`
	Status   string             `json:"status"`
	Kind     string             `json:"kind"`     // what the run showed (Judge)
	Headline string             `json:"headline"` // the sentence that says it
	Error    string             `json:"error,omitempty"`
	Requests []RequestRow       `json:"requests"`
	Leaks    int                `json:"leaks"`
	Errors   int                `json:"errors"`
	Notes    []string           `json:"notes,omitempty"`
	Metrics  []Metric           `json:"metrics,omitempty"`
	Timings  map[string]Timing  `json:"timings,omitempty"`
	Ratios   map[string]float64 `json:"ratios,omitempty"`
}

// OutcomeOf returns the outcome recorded in a run's final state.
func OutcomeOf(s State) Outcome {
	v := Judge(s, nil)
	return Outcome{Scenario: s.Scenario, Variant: s.Variant, Status: s.Status, Kind: v.Kind, Headline: v.Headline, Error: s.Error, Requests: s.Requests,
		Leaks: s.Leaks(), Errors: s.Errors(), Notes: s.Notes, Metrics: s.Metrics, Timings: s.Timings, Ratios: s.Ratios}
}
