"""Build DeepSpeed's CPU shared-memory communication op once at set-up time.

Without it the first DeepSpeed job of a fresh machine spends about a minute compiling it
(into the torch extensions cache) inside the timed workflow."""

import torch

if not torch.cuda.is_available():
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    ShareMemCommBuilder().load(verbose=False)
    print("deepspeed shm_comm op ready")
