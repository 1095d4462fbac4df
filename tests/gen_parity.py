#!/usr/bin/python3
"""PyTorch parity fixtures for tests/test_parity.c (the llm.c way).

For each reference model (mlp, cnn, rescnn) this builds the PyTorch module of
shared/anchors/torch_ref.py (copied below, with dropout made a parameter and
set to 0 so the step is deterministic), runs ONE training step on the first 8
FashionMNIST test images and writes two files in safetensors layout to
tests/fixtures/parity/:

  <model>_weights.fixture   the initial state_dict, PyTorch's names
                            (num_batches_tracked as I64 0-d): fmhost loads it
                            with fm_safetensors_load
  <model>_step.fixture      "input" [8,1,28,28] F32, "labels" [8] I64,
                            "logits" [8,10], "loss" [] (mean cross-entropy),
                            "grad.<param>" for every parameter, and
                            "after.<name>" for every parameter and buffer after
                            one torch.optim.Adam(lr=1e-3) step (BatchNorm
                            running statistics were updated by the forward in
                            train mode)

The weights are PyTorch's float32 initialisation; the step is computed in
float64 and stored as F32, so the fixtures hold the exact results of the
float32 inputs and the test measures fmhost's own rounding error only.

With --precision bf16 it writes <model>_step_bf16.fixture instead: the same
step in float32 under torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's
CPU mixed precision (linear and convolution layers in bfloat16, the rest in
float32), from the same initial weights.  That step is PyTorch's own
bfloat16 arithmetic, not an exact answer: test_parity holds fmhost's
--precision bf16 to it within bfloat16's resolution.

Run by hand, not in CI: `/usr/bin/python3 tests/gen_parity.py [--precision bf16]` (Debian's
python3-torch; written with torch 1.13).  The fixtures are committed; the
extension is .fixture because *.safetensors is ignored by git here.  The
writer is local, so no `safetensors` Python package is needed.
"""
import copy
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = os.environ.get("FMHOST_DATA", "/usr/share/datasets/fashion-mnist")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "parity")
MEAN, STD = 0.2860, 0.3530
BATCH = 8
SEED = 20240229


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def test_batch():
    x = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz")[:BATCH].astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    y = read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz")[:BATCH].astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1), torch.from_numpy(y)


# ---- the modules of shared/anchors/torch_ref.py (dropout probability added) ----

class MLP(nn.Module):
    def __init__(self, p=0.2):
        super().__init__()
        self.p = p
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = x.flatten(1)
        x = F.dropout(F.relu(self.fc1(x)), self.p, self.training)
        x = F.dropout(F.relu(self.fc2(x)), self.p, self.training)
        return self.fc3(x)


class CNN(nn.Module):
    def __init__(self, p=0.3):
        super().__init__()
        self.p = p
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(64 * 7 * 7, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), self.p, self.training)
        return self.fc2(x)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResCNN(nn.Module):
    def __init__(self, width=32, blocks=1):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        layers, cin = [], w
        for stage, cout in enumerate([w, 2 * w, 4 * w]):
            for b in range(blocks):
                layers.append(Block(cin, cout, 2 if (stage > 0 and b == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(x.mean((2, 3)))


MODELS = {
    "mlp": lambda: MLP(p=0.0),
    "cnn": lambda: CNN(p=0.0),
    "rescnn": lambda: ResCNN(32, 1),
}


# ---- writer: safetensors layout, as torch_ref.py's save_safetensors ----

def save_safetensors(path, tensors, meta):
    hdr, blobs, off = {"__metadata__": meta}, [], 0
    for k, v in tensors.items():
        a = v.detach().cpu().contiguous().numpy()
        a = a.astype("<i8" if a.dtype.kind in "iu" else "<f4")
        b = a.tobytes()
        hdr[k] = {"dtype": "I64" if a.dtype.kind == "i" else "F32", "shape": list(a.shape),
                  "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(tmp, path)


def generate_bf16(name, x, y):
    """One step under CPU autocast to bfloat16, in float32 otherwise."""
    torch.manual_seed(SEED)
    model = MODELS[name]()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    grads = {f"grad.{k}": p.grad.clone().float() for k, p in model.named_parameters()}
    opt.step()

    step = {"input": x, "labels": y, "logits": logits.detach().float(), "loss": loss.detach()}
    step.update(grads)
    step.update({f"after.{k}": v.clone() for k, v in model.state_dict().items()})
    meta = {"format": "pt", "model": name, "torch": torch.__version__, "seed": str(SEED),
            "generator": "tests/gen_parity.py --precision bf16",
            "precision": "torch.autocast cpu bfloat16 step, float32 master weights"}
    save_safetensors(os.path.join(OUT, f"{name}_step_bf16.fixture"), step, meta)
    print(f"{name}: bf16 autocast loss {loss.item():.6f}", file=sys.stderr)


def generate(name, x, y):
    torch.manual_seed(SEED)
    model = MODELS[name]()
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    # The step itself runs in float64 from the float32 weights and inputs
    # (both exact in float64), so every stored result is the exact answer
    # rounded once to float32.  Against a float32 reference the test would
    # measure the sum of two implementations' rounding: PyTorch's own float32
    # conv gradients behind BatchNorm are 3.5e-4 off the exact ones under the
    # test's metric, more than the tolerance fmhost is held to.
    model = copy.deepcopy(model).double()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()
    logits = model(x.double())
    loss = F.cross_entropy(logits, y)
    loss.backward()
    grads = {f"grad.{k}": p.grad.clone() for k, p in model.named_parameters()}
    opt.step()

    step = {"input": x, "labels": y, "logits": logits.detach(), "loss": loss.detach()}
    step.update(grads)
    step.update({f"after.{k}": v.clone() for k, v in model.state_dict().items()})

    meta = {"format": "pt", "model": name, "torch": torch.__version__, "seed": str(SEED),
            "generator": "tests/gen_parity.py", "precision": "float64 step, stored as F32"}
    save_safetensors(os.path.join(OUT, f"{name}_weights.fixture"), initial, meta)
    save_safetensors(os.path.join(OUT, f"{name}_step.fixture"), step, meta)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"loss {loss.item():.6f}", file=sys.stderr)


def main():
    args = sys.argv[1:]
    if args not in ([], ["--precision", "fp32"], ["--precision", "bf16"]):
        sys.exit("usage: gen_parity.py [--precision fp32|bf16]")
    bf16 = args == ["--precision", "bf16"]
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    x, y = test_batch()
    for name in MODELS:
        (generate_bf16 if bf16 else generate)(name, x, y)


if __name__ == "__main__":
    main()
