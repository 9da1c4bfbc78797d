"""The study: storage, the engine, runs, grids, statistics, surfaces and extrapolation."""
