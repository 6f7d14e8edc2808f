package scenarios

import "github.com/rlslab/rlslab/scenarios/engine"

// allScenarios lists every scenario of this package in display order (the
// order of the lessons).
func allScenarios() []*engine.Scenario {
	list := []*engine.Scenario{
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
		ViewBypass(),
		ResetScope(),
		LostContext(),
		TrustedFlag(),
		SideChannels(),
		RLSPerformance(),
		StalePlan(),
		YourApp(), // lesson 18: the seed's requests through rlslab's proxy
		MissingRLS(),
		CrossTenantFK(),
		// lessons 21 and 22
		SchemaPerTenant(),
		PinnedState(),
	}
	// Lesson 23 (orm-transactions): kept in a block of its own.
	list = append(list,
		ORMTransactions(),
	)
	return list
}

// DefaultCatalog returns the catalog of every scenario in this package.
func DefaultCatalog() *engine.Catalog {
	c, err := engine.NewCatalog(allScenarios()...)
	if err != nil {
		panic(err) // the package's own list is fixed at compile time; a test covers it
	}
	return c
}
