"""Benchmark (not a test) of two fast-path changes, each against the usual way in the same run.

1. Loss head at the DocVQA shape (2443 positions, hidden 3072, vocabulary 32064, a short answer):
   vocabulary logits at every position then the masked mean (transformers' path) against logits at
   the answer positions only (``Phi3VForCausalLM.answer_loss``). Forward + backward of the head alone.
2. AdamW step: the multi-tensor ("foreach") implementation against the fused one.
3. CLIP ViT-L/14-336 forward on one crop: all 24 layers against the 23 whose output is used.
4. LoRA's frozen base at full size: its bytes stored in fp32 against bf16 (from the built model's parameters).

Prints the machine, versions, every repeat, and median with min-max. Run: .venv/bin/python scripts/bench_fast_path.py
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def show(name: str, times: list[float], extra: str = "") -> None:
    print(f"{name:<34} median {statistics.median(times) * 1e3:9.1f} ms  (min {min(times) * 1e3:.1f}, "
          f"max {max(times) * 1e3:.1f}; {len(times)} repeats) {extra}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--positions", type=int, default=2443)
    p.add_argument("--answer-tokens", type=int, default=12)
    p.add_argument("--hidden", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=32064)
    p.add_argument("--adamw-parameters", type=int, default=50_000_000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {device}; "
          f"torch {torch.__version__}, python {platform.python_version()}")

    torch.manual_seed(0)
    head = torch.nn.Linear(args.hidden, args.vocab, bias=False, device=device)
    hidden = torch.randn(1, args.positions, args.hidden, device=device, requires_grad=True)
    labels = torch.full((1, args.positions), -100, device=device)
    labels[0, -args.answer_tokens:] = torch.randint(0, args.vocab, (args.answer_tokens,), device=device)

    def full_logits():
        logits = head(hidden).float()
        loss = F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100)
        loss.backward()
        return loss

    def answer_only():
        targets = labels[:, 1:]
        keep = targets != -100
        logits = head(hidden[:, :-1][keep])
        loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum") / keep.sum()
        loss.backward()
        return loss

    assert torch.allclose(full_logits(), answer_only(), atol=1e-5)
    logits_mb = args.positions * args.vocab * 4 / 2**20
    print(f"\nloss head, {args.positions} positions x {args.vocab} ids, {args.answer_tokens} answer tokens:")
    show("all positions (transformers)", timed(full_logits, args.repeats),
         f"logits {logits_mb:.0f} MB + their gradient")
    show("answer positions only (ftbench)", timed(answer_only, args.repeats),
         f"logits {args.answer_tokens * args.vocab * 4 / 2**20:.1f} MB")

    print(f"\nAdamW step over {args.adamw_parameters / 1e6:.0f} M parameters:")
    for fused in (False, True):
        params = [torch.nn.Parameter(torch.randn(args.adamw_parameters // 10, device=device)) for _ in range(10)]
        for q in params:
            q.grad = torch.randn_like(q)
        try:
            optimizer = torch.optim.AdamW(params, lr=1e-5, fused=fused, foreach=None if fused else True)
        except RuntimeError as e:
            print(f"fused={fused}: not available ({e})")
            continue
        show("fused" if fused else "foreach (multi-tensor)", timed(optimizer.step, args.repeats))

    print("\nCLIP ViT-L/14-336, one 336-px crop, forward:")
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from ftbench.models.phi3v import CLIP_VIT_L_336

    clip = CLIPVisionModel(CLIPVisionConfig(**CLIP_VIT_L_336)).eval().to(device)
    pixels = torch.randn(1, 3, 336, 336, device=device)
    layers = clip.encoder.layers
    for n in (len(layers), len(layers) - 1):  # as Phi3VImageEmbedding.crop_features runs them
        def forward(n=n, model=clip):
            with torch.no_grad():
                hidden = model.pre_layrnorm(model.embeddings(pixels))
                for layer in layers[:n]:
                    hidden = layer(hidden, None)
        show(f"{n} layers", timed(forward, args.repeats))
    del clip

    print("\nLoRA's frozen base at full size (phi3.5-vision, built on the meta device):")
    from ftbench.models.presets import random_model

    model = random_model("phi3.5-vision", device="meta")
    for dtype in (torch.float32, torch.bfloat16):
        size = sum(q.numel() * torch.empty((), dtype=dtype).element_size() for q in model.parameters())
        print(f"{str(dtype):<34} {size / 2**30:6.2f} GiB")


if __name__ == "__main__":
    main()
