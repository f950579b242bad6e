"""The tuner, above the pipeline: it compiles and measures each layer's configs (locally,
over RPC, or in packets on the Hexagon emulator), ranks them with an XGBoost cost model and
appends every measurement to a tuning log (``tuning/``, below the pipeline, which reads the
best records at compile time); MetaSchedule tuning of the pipeline's kernels beside it."""
