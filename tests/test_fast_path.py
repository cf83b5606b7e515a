"""The fast training path computes exactly what the usual one does."""

import torch
from transformers.models.phi3.modeling_phi3 import Phi3ForCausalLM

from ftbench.models.presets import random_model


def test_answer_only_loss_and_gradients_equal_the_full_logits_loss():
    model = random_model("tiny", seed=1)
    torch.manual_seed(0)
    ids = torch.randint(20, 500, (3, 40))
    labels = ids.clone()
    labels[:, :30] = -100  # prompt
    labels[1, 35:] = -100
    mask = torch.ones_like(ids)
    mask[2, 37:] = 0  # padding
    labels[2, 37:] = -100
    ours = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert ours.logits.shape == (int((labels[:, 1:] != -100).sum()), model.config.vocab_size)
    ours.loss.backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    # transformers' own path: logits at every position, then the masked mean
    reference = Phi3ForCausalLM.forward(model, inputs_embeds=model.embed_inputs(ids), attention_mask=mask,
                                        labels=labels)
    reference.loss.backward()
    assert torch.allclose(ours.loss, reference.loss, atol=1e-6, rtol=0)
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.allclose(ours_grads[name], param.grad, atol=1e-6, rtol=1e-5), name


def test_no_answer_tokens_gives_zero_loss_not_nan():
    model = random_model("tiny", seed=1)
    ids = torch.randint(20, 500, (1, 12))
    out = model(input_ids=ids, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0
