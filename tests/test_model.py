import torch
from PIL import Image
from safetensors.torch import load_file

from ftbench.data.common import read_examples
from ftbench.models.loading import load_model, load_tokenizer
from ftbench.models.phi3v import IGNORE_INDEX, Phi3VForCausalLM, Phi3VImageEmbedding, image_token_count
from ftbench.models.presets import phi35_vision_config
from ftbench.models.processing_phi3v import Phi3VProcessor, collate, hd_transform
from ftbench.training.settings import TrainSettings
from ftbench.training.strategies import apply_strategy


def test_token_counts_match_the_official_table():
    # (w, h) -> num_crops 4 and 16 padded sizes and tokens, from the official processor
    cases = {
        (336, 336): ([672, 672], 757, [1344, 1344], 2509),
        (640, 480): ([672, 672], 757, [1008, 1344], 1921),
        (480, 640): ([672, 672], 757, [1344, 1008], 1933),
        (1000, 250): ([336, 1344], 745, [672, 2688], 2485),
    }
    for (w, h), (size4, n4, size16, n16) in cases.items():
        image = Image.new("RGB", (w, h), (10, 20, 30))
        for crops, size, n in ((4, size4, n4), (16, size16, n16)):
            pixels, padded = hd_transform(image, crops, 336)
            assert padded == size
            assert pixels.shape == (crops + 1, 3, 336, 336)
            assert image_token_count(*padded, crop_size=336, merged_per_side=12) == n


def test_hd_transform_pads_with_white_and_keeps_unused_slots_zero():
    image = Image.new("RGB", (56, 20), (0, 0, 0))  # resized to 112x40, padded to 112x56
    pixels, size = hd_transform(image, 4, 56)
    assert size == [56, 112]  # 2 crops wide, height padded to one crop
    white = (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor([0.26862954, 0.26130258, 0.27577711])
    top_row = pixels[1, :, 0, 0]
    assert torch.allclose(top_row, white, atol=1e-5)  # padding above the resized image is white
    assert torch.count_nonzero(pixels[3:]) == 0


def test_merge_and_separator_order(tiny_base):
    """Feature layout per image: sub-crop rows each ending in sub_GN, then glb_GN, then the global view."""
    model = load_model(tiny_base)
    emb: Phi3VImageEmbedding = model.model.vision_embed_tokens
    with torch.no_grad():
        emb.sub_GN.fill_(7.0)
        emb.glb_GN.fill_(-7.0)
        identity = torch.nn.Linear(emb.glb_GN.shape[-1], emb.glb_GN.shape[-1], bias=False)
        identity.weight.copy_(torch.eye(emb.glb_GN.shape[-1]))
        emb.img_projection = torch.nn.Sequential(identity)
    pixels = torch.randn(1, 5, 3, 56, 56)
    sizes = torch.tensor([[56, 112]])  # 1 row x 2 crops
    out = emb(pixels, sizes)
    m = 2
    assert out.shape[0] == image_token_count(56, 112, 56, m) == 1 * m * (2 * m + 1) + 1 + m * (m + 1)
    row = out[: 2 * m + 1]
    assert torch.all(row[-1] == 7.0) and not torch.all(row[0] == 7.0)
    assert torch.all(out[m * (2 * m + 1)] == -7.0)  # glb_GN after the sub-crop block
    crop_features = emb.crop_features(pixels[0, :3])
    # first sub-crop row: crop 1's first merged row then crop 2's first merged row
    assert torch.allclose(row[:m], crop_features[1, 0]) and torch.allclose(row[m : 2 * m], crop_features[2, 0])
    # 2x2 merge order: top-left, top-right, bottom-left, bottom-right patches on the channel axis
    clip = emb.clip
    hidden = clip.pre_layrnorm(clip.embeddings(pixels[0, :1]))
    for layer in clip.encoder.layers[: emb.num_layers_used]:
        hidden = layer(hidden, None)
    patches = hidden[0, 1:].reshape(4, 4, -1)
    expected = torch.cat([patches[0, 0], patches[0, 1], patches[1, 0], patches[1, 1]])
    assert torch.allclose(crop_features[0, 0, 0], expected, atol=1e-6)


def test_checkpoint_keys_are_official_and_reload_exactly(tiny_base, tmp_path):
    keys = set(load_file(tiny_base / "model.safetensors"))
    assert "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert {"model.vision_embed_tokens.glb_GN", "model.vision_embed_tokens.sub_GN", "lm_head.weight",
            "model.vision_embed_tokens.img_projection.0.weight", "model.layers.0.self_attn.qkv_proj.weight",
            "model.layers.0.mlp.gate_up_proj.weight"} <= keys
    model = load_model(tiny_base)
    reloaded = {k: v for k, v in model.state_dict().items()}
    stored = load_file(tiny_base / "model.safetensors")
    assert set(stored) == set(reloaded)
    assert all(torch.equal(stored[k], reloaded[k]) for k in stored)


def test_full_size_preset_has_the_official_parameter_count():
    with torch.device("meta"):
        model = Phi3VForCausalLM(phi35_vision_config())
    assert sum(p.numel() for p in model.parameters()) == 4_146_621_440


def _batch(tiny_base, tiny_data, model):
    tokenizer = load_tokenizer(tiny_base)
    processor = Phi3VProcessor.for_model(tokenizer, model.config, 1)
    examples = read_examples(tiny_data["hateful_memes"] / "hateful_memes_train.jsonl")[:2]
    encs = [processor.encode_training(e["conversations"], tiny_data["hateful_memes"] / "images") for e in examples]
    return collate(encs, processor.pad_token_id), encs, processor


def test_labels_mask_prompt_and_train_answer(tiny_base, tiny_data):
    model = load_model(tiny_base)
    batch, encs, processor = _batch(tiny_base, tiny_data, model)
    enc = encs[0]
    answer = [t for t in enc.labels if t != IGNORE_INDEX]
    assert processor.tokenizer.decode(answer) .replace(" ", "") in ("yes<|end|>\n<|endoftext|>",
                                                                    "no<|end|>\n<|endoftext|>")
    assert enc.input_ids[-len(answer):] == answer
    assert enc.input_ids.count(processor.image_token_id) == image_token_count(*enc.image_sizes[0].tolist(), 56, 2)
    assert batch["attention_mask"].sum() == sum(len(e.input_ids) for e in encs)


def _grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_strategies_train_what_the_recipe_trains(tiny_base, tiny_data):
    base = load_model(tiny_base)
    batch, _, _ = _batch(tiny_base, tiny_data, base)

    full = apply_strategy(load_model(tiny_base), TrainSettings(strategy="full"))
    got = _grads(full, batch)
    assert any("img_processor" in n for n in got) and any("layers.0.self_attn" in n for n in got)
    assert not any("encoder.layers.2." in n or "post_layernorm" in n for n in got)  # never-run CLIP layer

    frozen = apply_strategy(load_model(tiny_base), TrainSettings(strategy="frozen_vision"))
    got = _grads(frozen, batch)
    assert got and not any("vision_embed_tokens" in n or "embed_tokens" in n for n in got)
    assert "lm_head.weight" in got

    lora = apply_strategy(load_model(tiny_base), TrainSettings(strategy="lora", lora_rank=4, lora_alpha=8))
    got = _grads(lora, batch)
    assert got and all("lora_" in n for n in got)
    assert any("img_projection" in n for n in got) and any("lm_head" in n for n in got)
    assert any("vision_model.encoder.layers.0.self_attn.q_proj" in n for n in got)

    quantised = load_model(tiny_base, quantize_4bit="fp32")
    import bitsandbytes as bnb

    assert isinstance(quantised.model.layers[0].self_attn.qkv_proj, bnb.nn.Linear4bit)
    assert not isinstance(quantised.lm_head, bnb.nn.Linear4bit)
    qlora = apply_strategy(quantised, TrainSettings(strategy="qlora", lora_rank=4, lora_alpha=8))
    got = _grads(qlora, batch)
    assert got and all("lora_" in n for n in got)


def test_generation_stops_and_uses_images(tiny_base, tiny_data):
    model = load_model(tiny_base)
    tokenizer = load_tokenizer(tiny_base)
    processor = Phi3VProcessor.for_model(tokenizer, model.config, 1)
    example = read_examples(tiny_data["docvqa"] / "docvqa_val.jsonl")[0]
    enc = processor.encode_generation(example["conversations"][0], tiny_data["docvqa"] / "images")
    short = processor.encode_generation({"images": [], "user": "hi", "assistant": "x"}, tiny_data["docvqa"])
    batch = collate([enc, short], processor.pad_token_id, padding_side="left")
    batch.pop("labels")
    assert batch["attention_mask"][1, 0] == 0  # left padding
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=4, do_sample=False, eos_token_id=processor.stop_token_ids,
                             pad_token_id=processor.pad_token_id)
    assert out.shape[0] == 2
    # batched generation with left padding equals generating the example alone
    alone = collate([enc], processor.pad_token_id, "left")
    alone.pop("labels")
    with torch.no_grad():
        ref = model.generate(**alone, max_new_tokens=4, do_sample=False, eos_token_id=processor.stop_token_ids,
                             pad_token_id=processor.pad_token_id)
    n = ref.shape[1] - alone["input_ids"].shape[1]
    assert out[0, batch["input_ids"].shape[1] : batch["input_ids"].shape[1] + n].tolist() == ref[0, -n:].tolist()


def test_random_weights_mode_builds_presets_without_download():
    from ftbench.models.presets import random_model

    tiny = random_model("tiny", attention="eager")
    assert sum(p.numel() for p in tiny.parameters()) == 205_600
    assert tiny.config._attn_implementation == "eager"
    assert tiny.model.vision_embed_tokens.clip.config._attn_implementation == "eager"
    assert any(p.abs().sum() > 0 for p in tiny.parameters())
    full = random_model("phi3.5-vision", device="meta")
    assert sum(p.numel() for p in full.parameters()) == 4_146_621_440
