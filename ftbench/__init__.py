"""ftbench: reproducible fine-tuning benchmarks of Phi-3.5-vision.

Layers, lowest first; a module imports only from its own layer and those below it (the table and
its checks: tests/test_layers.py): base (atomic, errors, schema, hub, metrics, ...) < data < models
< training < jobs (train, evaluate, pretrain, speed, export) < cli. The matrix (config, cluster) and
the results (report, plots) stand on data and base alone, so the workflow plans its jobs and the
README regenerates without torch. The workflow points one way: Snakefile and rules ->
workflow_scripts -> ftbench.
"""
