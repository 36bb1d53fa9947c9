"""One batched forward in which every row uses its own LoRA adapter of the same base: the stacked form.

PEFT's mixed-adapter batches (`adapter_names=`) loop over the adapters inside every LoRA layer: pick the rows of
one adapter, run its lora_A and lora_B on them, put the result back. With 4 adapters on SmolLM2-135M (30 layers ×
7 LoRA linears) that is thousands of small operations per generated token, and decoding a small model is bound by
the cost per operation rather than by arithmetic: 4 rows took 2.3× the time of one row on CPU.

Stacked: in each LoRA layer the adapters' A matrices are concatenated into one [R, in] matrix and their B matrices
into one [out, R] (R = the sum of their ranks). Each row keeps only its own adapter's block of A·x (a 0/1 mask),
and is scaled by its adapter's scaling after B, in PEFT's order:

    delta[b] = (B_cat · (mask[b] ⊙ (A_cat · x[b]))) · scaling[b]   =   B_a · A_a · x[b] · scaling_a

for row b's adapter a; the other adapters' blocks add exact zeros. Two matrix products and two multiplications
per layer, however many adapters. The base layer runs with the adapters disabled and a forward hook adds the
delta, so nothing inside PEFT is patched; layers PEFT handles differently (DoRA and other variants, LoRA on
embeddings, a LoRA bias) keep PEFT's own mixed batches.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

BASE_ADAPTER = "__base__"   # PEFT's name for "no adapter" in a mixed batch


def _stackable_layers(model, names: set[str]) -> list | None:
    """The LoRA linears that hold any of `names`, or None if one of them is not a plain LoRA linear."""
    from peft.tuners.lora.layer import Linear, LoraLayer

    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        used = [n for n in names if n in module.lora_A or n in getattr(module, "lora_embedding_A", {})]
        if not used:
            continue
        plain = (type(module) is Linear and not module.merged
                 and all(n in module.lora_A and n not in module.lora_variant and module.lora_B[n].bias is None
                         for n in used))
        if not plain:
            return None
        layers.append(module)
    return layers


def _stacked_hook(module, row_adapters: list[str | None]):
    """A forward hook adding each row's own adapter delta to the base layer's output."""
    import torch
    import torch.nn.functional as F

    names = [n for n in dict.fromkeys(row_adapters) if n is not None and n in module.lora_A]
    a_cat = torch.cat([module.lora_A[n].weight for n in names])            # [R, in]
    b_cat = torch.cat([module.lora_B[n].weight for n in names], dim=1)     # [out, R]
    blocks, start = {}, 0
    for n in names:
        rank = module.lora_A[n].weight.shape[0]
        blocks[n] = (start, start + rank)
        start += rank
    rows = len(row_adapters)
    mask = torch.zeros(rows, start, dtype=a_cat.dtype, device=a_cat.device)             # [rows, R]
    scaling = torch.zeros(rows, 1, dtype=a_cat.dtype, device=a_cat.device)              # [rows, 1]
    for row, name in enumerate(row_adapters):
        if name in blocks:
            mask[row, slice(*blocks[name])] = 1.0
            scaling[row] = module.scaling[name]

    def hook(_module, args, output):
        x = args[0]
        if x.shape[0] != rows:
            raise RuntimeError(f"stacked adapters were set up for {rows} rows but got a batch of {x.shape[0]}")
        shape = (rows,) + (1,) * (x.dim() - 2) + (-1,)                                  # [rows, 1, …, R or 1]
        h = F.linear(x.to(a_cat.dtype), a_cat) * mask.view(shape)                        # [rows, …, R]
        return output + (F.linear(h, b_cat) * scaling.view(shape)).to(output.dtype)    # [rows, …, out]

    return hook


@contextmanager
def adapters_per_row(model, row_adapters: list[str]) -> Iterator[dict]:
    """Within the block, a forward (or generate) of `model` gives row i the adapter named row_adapters[i]
    (BASE_ADAPTER: the base alone). Yields the keyword arguments to pass to that forward or generate: none for the
    stacked form, PEFT's `adapter_names` where a layer needs PEFT's own mixed batches."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        yield {}
        return
    rows = [None if name == BASE_ADAPTER else name for name in row_adapters]
    layers = _stackable_layers(model, {n for n in rows if n is not None})
    if layers is None:
        yield {"adapter_names": list(row_adapters)}
        return
    handles = [layer.register_forward_hook(_stacked_hook(layer, rows)) for layer in layers]
    try:
        with model.disable_adapter():
            yield {}
    finally:
        for handle in handles:
            handle.remove()
