"""Reference next-token loss and gradients of a GPT-2 in PyTorch, for tests/gpt2_tf_test.ts.

Usage: gpt2_grad_reference.py MODEL.onnx INPUTS.json OUT.json

The weights are the model's initializers (HF state-dict names); the forward is the independent
one of gpt2_reference.py. INPUTS.json holds {"input_ids": [[...]], "n_head": int}; position i
predicts input_ids[:, i + 1] and the loss is the mean cross-entropy. OUT.json receives
{"loss": float, "grads": {name: [flat float32 values]}}.
"""

import json
import sys

import onnx
import torch
from onnx import numpy_helper

from gpt2_reference import forward


def main():
    model_path, inputs_path, out_path = sys.argv[1:4]
    model = onnx.load(model_path)
    w = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).requires_grad_(True)
        for t in model.graph.initializer
        if t.name.startswith("transformer.")
    }
    with open(inputs_path) as f:
        inputs = json.load(f)
    ids = torch.tensor(inputs["input_ids"], dtype=torch.long)
    x, y = ids[:, :-1], ids[:, 1:]
    logits = forward(w, x, torch.ones_like(x), inputs["n_head"])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    grads = {name: t.grad.reshape(-1).tolist() for name, t in w.items()}
    with open(out_path, "w") as f:
        json.dump({"loss": loss.item(), "grads": grads}, f)


if __name__ == "__main__":
    main()
