"""Tools that use a trained checkpoint: `sashimi-generate` (generate), `sashimi-eval` (evaluate), the
MNIST demos (mnist_demo)."""
