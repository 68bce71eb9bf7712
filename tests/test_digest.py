"""The one tensor digest (weights identity, cache entries, checkpoints): every part of the input counts."""

from __future__ import annotations

import hashlib
import hmac

import torch

from allo_lightning.digest import derive_key, tensors_digest


def test_digest_depends_on_names_dtypes_shapes_bytes_context_and_key():
    base = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor(1.5)}
    d = tensors_digest(base)
    variants = [
        {"a2": base["a"], "b": base["b"]},  # name
        {"a": base["a"].double(), "b": base["b"]},  # dtype
        {"a": base["a"].reshape(3, 2), "b": base["b"]},  # shape
        {"a": base["a"] + 1e-7, "b": base["b"]},  # bytes
        {"a": base["a"]},  # a tensor less
    ]
    digests = {d} | {tensors_digest(v) for v in variants}
    digests |= {tensors_digest(base, context="x"), tensors_digest(base, key=derive_key("k"))}
    assert len(digests) == len(variants) + 3
    assert tensors_digest(dict(reversed(base.items()))) == d  # order of the dict does not matter
    # keyed: a real HMAC-SHA256 (recomputing it needs the key)
    key = derive_key("allo_lightning.probe", "tiny-abc")
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in [b""] + [x for n in sorted(base) for x in (f"{n}|{base[n].dtype}|{tuple(base[n].shape)}".encode(),
                                                           base[n].contiguous().reshape(-1).view(torch.uint8)
                                                           .numpy().tobytes())]:
        h.update(len(part).to_bytes(8, "little") + part)
    assert tensors_digest(base, key=key) == h.hexdigest()


def test_weights_identity_ignores_the_float_dtype_only():
    import copy

    from allo_lightning.backbone import hash_parameters

    net = torch.nn.Linear(3, 2)
    ident = hash_parameters(net)
    assert hash_parameters(copy.deepcopy(net).to(torch.bfloat16)) != ident  # bf16 rounding changes the values
    net2 = copy.deepcopy(net)
    assert hash_parameters(net2.double()) == ident  # the same values in float64: same weights
    with torch.no_grad():
        net2.weight[0, 0] += 1
    assert hash_parameters(net2) != ident
