"""The driver side: `sashimi-train` (cli), job YAMLs and overrides (jobs), everything checked before Ray
starts (prepare: returns the WorkerConfig), the Ray launch (launch, connect), training in this process
(local), and the closing summary (summary)."""
