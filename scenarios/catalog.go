package scenarios

// allScenarios lists every scenario of this package in display order.
func allScenarios() []*Scenario {
	return []*Scenario{
		SetLeak(),
	}
}
