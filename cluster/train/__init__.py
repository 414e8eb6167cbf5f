"""The worker side: `train_rank` and the Trainer (trainer), what a runtime provides (runtime), the
driver's hand-off (worker_config), data streams (data), TensorBoard (board), throughput (meter),
precision, the LR schedule, fault injection for tests (faults), stops that are not retried (stops), and
the Ray Train adapter (ray_worker, the only module here importing Ray)."""
