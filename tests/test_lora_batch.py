"""The stacked form of a mixed-adapter batch gives every row what its own adapter gives it alone, and what PEFT's
own mixed batches give; layers it does not handle fall back to PEFT's `adapter_names`."""

import pytest
import torch

from pipelines.lora_batch import BASE_ADAPTER, adapters_per_row


@pytest.fixture(scope="module")
def peft_model(tiny_model):
    """The tiny Llama with three random (non-zero) adapters of different ranks, scalings and target modules."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    configs = {"one": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
               "two": LoraConfig(r=8, lora_alpha=4, target_modules="all-linear", init_lora_weights=False),
               "three": LoraConfig(r=2, lora_alpha=16, target_modules=["down_proj", "o_proj"], init_lora_weights=False)}
    model = get_peft_model(model, configs["one"], adapter_name="one")
    for name in ("two", "three"):
        model.add_adapter(name, configs[name])
    return model.eval()


def _logits(model, ids, **kwargs):
    with torch.inference_mode():
        return model(input_ids=ids, **kwargs).logits


def test_each_row_gets_its_own_adapter(peft_model):
    rows = ["one", BASE_ADAPTER, "two", "three", "one"]
    ids = torch.randint(3, 200, (len(rows), 7), generator=torch.Generator().manual_seed(1))
    with adapters_per_row(peft_model, rows) as kwargs:
        assert kwargs == {}, "plain LoRA linears take the stacked form"
        stacked = _logits(peft_model, ids)
    peft_mixed = _logits(peft_model, ids, adapter_names=rows)
    torch.testing.assert_close(stacked, peft_mixed, atol=1e-5, rtol=1e-5)
    for row, name in enumerate(rows):
        if name == BASE_ADAPTER:
            with peft_model.disable_adapter():
                alone = _logits(peft_model, ids[row:row + 1])
        else:
            peft_model.set_adapter(name)
            alone = _logits(peft_model, ids[row:row + 1])
        torch.testing.assert_close(stacked[row:row + 1], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(stacked[0], stacked[1]), "the adapters really change the answer"


def test_the_model_is_left_as_it_was(peft_model):
    peft_model.set_adapter("two")
    ids = torch.randint(3, 200, (2, 5), generator=torch.Generator().manual_seed(2))
    before = _logits(peft_model, ids)
    with adapters_per_row(peft_model, ["one", "three"]):
        _logits(peft_model, ids)
    torch.testing.assert_close(_logits(peft_model, ids), before, atol=0, rtol=0)
    assert all(not module._forward_hooks for module in peft_model.modules())


def test_a_dora_adapter_falls_back_to_peft_mixed_batches(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], use_dora=True), adapter_name="d").eval()
    with adapters_per_row(model, ["d", BASE_ADAPTER]) as kwargs:
        assert kwargs == {"adapter_names": ["d", BASE_ADAPTER]}
