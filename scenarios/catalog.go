package scenarios

// allScenarios lists every scenario of this package in display order (the
// order of the lessons).
func allScenarios() []*Scenario {
	return []*Scenario{
		SetLeak(),
		SplitCalls(),
		SharedPool(),
		WrongScope(),
		RLSBypass(),
		UnsetSetting(),
		ResetOnRelease(),
		SetRole(),
		ScopingCost(),
		PgBouncerTx(),
	}
}
