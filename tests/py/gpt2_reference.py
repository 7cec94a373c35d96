"""Check a GPT-2 ONNX model with onnx's full checker and compute reference logits in PyTorch.

Usage: gpt2_reference.py MODEL.onnx INPUTS.json LOGITS.f32

INPUTS.json holds {"input_ids": [[...]], "attention_mask": [[...]], "n_head": int}. The
weights are read from the model's initializers by their HF state-dict names; the forward is an
independent reimplementation of HF GPT2LMHeadModel (eager attention, gelu_new, tied head).
LOGITS.f32 receives the logits [batch, seq, vocab] as raw little-endian float32.
"""

import json
import math
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper


def layer_norm(x, w, prefix):
    return torch.nn.functional.layer_norm(
        x, x.shape[-1:], w[prefix + ".weight"], w[prefix + ".bias"], eps=1e-5
    )


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def forward(w, input_ids, attention_mask, n_head):
    batch, seq = input_ids.shape
    d = w["transformer.wte.weight"].shape[1]
    hd = d // n_head
    # HF position ids for left padding: cumsum(mask) - 1, padding filled with 1
    position_ids = attention_mask.cumsum(-1) - 1
    position_ids = position_ids.masked_fill(attention_mask == 0, 1)
    h = w["transformer.wte.weight"][input_ids] + w["transformer.wpe.weight"][position_ids]
    causal = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
    allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]  # [b, 1, s, s]
    lowest = torch.finfo(torch.float32).min
    i = 0
    while f"transformer.h.{i}.ln_1.weight" in w:
        n = f"transformer.h.{i}"
        x = layer_norm(h, w, n + ".ln_1")
        qkv = x @ w[n + ".attn.c_attn.weight"] + w[n + ".attn.c_attn.bias"]
        q, k, v = (t.view(batch, seq, n_head, hd).transpose(1, 2) for t in qkv.split(d, dim=2))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = torch.where(allowed, scores, torch.tensor(lowest))
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, d)
        h = h + ctx @ w[n + ".attn.c_proj.weight"] + w[n + ".attn.c_proj.bias"]
        x = layer_norm(h, w, n + ".ln_2")
        x = gelu_new(x @ w[n + ".mlp.c_fc.weight"] + w[n + ".mlp.c_fc.bias"])
        h = h + x @ w[n + ".mlp.c_proj.weight"] + w[n + ".mlp.c_proj.bias"]
        i += 1
    h = layer_norm(h, w, "transformer.ln_f")
    return h @ w["transformer.wte.weight"].T


def main():
    model_path, inputs_path, out_path = sys.argv[1:4]
    onnx.checker.check_model(model_path, full_check=True)
    model = onnx.load(model_path)
    w = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    with open(inputs_path) as f:
        inputs = json.load(f)
    with torch.no_grad():
        logits = forward(
            w,
            torch.tensor(inputs["input_ids"], dtype=torch.long),
            torch.tensor(inputs["attention_mask"], dtype=torch.long),
            inputs["n_head"],
        )
    logits.numpy().astype("<f4").tofile(out_path)
    print(f"checker ok; logits {list(logits.shape)}")


if __name__ == "__main__":
    main()
