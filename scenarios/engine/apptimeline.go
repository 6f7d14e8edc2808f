package engine

// AddTimeline appends ev to the state's timeline, stamped now when its At
// is 0, for events that come from outside a scenario's pools (an
// application's own connections seen through rlslab's proxy). appRole names
// the lab's app role for a timeline that has none yet.
func (t *Tracker) AddTimeline(appRole string, ev TimelineEvent) {
	t.Update(func(s *State) { s.addTimeline(appRole, ev) })
}
