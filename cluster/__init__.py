"""Training SaShiMi on a cluster: the only package that imports Ray. Sub-packages by side, each
importing only those above it in this list (tests/cluster/test_imports.py checks it):

    cluster/*.py        shared: the job schema (config), run dir layout, seeds, collectives, the logger, audio out
    cluster/tasks/      task plug-ins (generate, classify): model, examples, loss, metrics, hooks
    cluster/checkpoint/ the checkpoint manager, files on storage, load_checkpoint for the tools
    cluster/train/      the worker side: Trainer and train_rank, data streams, TensorBoard, the Ray adapter
    cluster/driver/     the driver side: sashimi-train, job YAMLs, prepare(), Ray launch, run_local
    cluster/tools/      sashimi-generate, sashimi-eval, the MNIST demos
"""
