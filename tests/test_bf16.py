"""Both decoders under DeepSpeed's bf16 regime without DeepSpeed: parameters cast to bf16, buffers left as they
were (fp32), no autocast — exactly what its engine does to the module (the end-to-end launches in
test_launch_configs.py run the real thing). Every module must follow its weights' dtype."""
from __future__ import annotations

import pytest
import torch

from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.losses import build_loss
from tests import test_models, test_parallel


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("small")


def deepspeed_bf16_cast(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():
        p.data = p.data.to(torch.bfloat16)
    assert any(b.dtype == torch.float32 for b in model.buffers())  # the case that broke: fp32 buffers stay
    return model


@pytest.mark.parametrize("arch", ["original", "parallel"])
def test_forward_backward_in_bf16_parameters_with_fp32_buffers(arch, tokenizer):
    spec = test_models if arch == "original" else test_parallel
    model = deepspeed_bf16_cast(spec.make_model(tokenizer))
    batch = spec.make_batch(tokenizer)
    out = model(batch)
    assert out.action_logits.dtype == torch.bfloat16
    losses = build_loss(spec.make_cfg().loss)(out, batch)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)


def test_streaming_in_bf16(tokenizer):
    model = deepspeed_bf16_cast(test_parallel.make_model(tokenizer)).eval()
    batch = test_parallel.make_batch(tokenizer)
    texts = model.transcribe(batch)
    assert len(texts) == batch["pixels"].shape[0] and all(len(t) == batch["pixels"].shape[1] for t in texts)
