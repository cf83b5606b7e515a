"""The parts of a cell's training, each one concern, lowest first; a module imports only those above it:

- ``settings``: what a cell trains (``TrainSettings``) and which settings leave its result unchanged;
- ``distributed``: the process group and the few collectives the others use;
- ``strategies``: what trains (full, frozen vision, LoRA, QLoRA, DoRA) and its weight-decay groups;
- ``data``: the sample order and each step's micro-batches, encoded by DataLoader workers;
- ``engines``: DeepSpeed ZeRO-2 and DDP behind one interface (forward-backward, optimizer step,
  save and load of their state);
- ``checkpoint``: the checkpoint folders, RNG states and the resume decision (the manifest is
  ``ftbench.checkpoint_files``).

The loop that uses them is ``ftbench.train`` (tests/test_layers.py checks this order and the
layers of ftbench).
"""
