#!/usr/bin/python3
"""Writes the seed corpus of the fuzz targets: a few small valid inputs each,
in fuzz/corpus/<target>/.  Deterministic (gzip without a timestamp), so that
running it again changes nothing.  Run from anywhere:

    /usr/bin/python3 fuzz/gen_corpus.py

The inputs follow the formats the targets read (see each fuzz_*.c).
"""
import gzip
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


# ---- IDX: two 28x28 images, three labels ----------------------------------------
images = struct.pack(">IIII", 0x803, 2, 28, 28) + bytes((i * 7) % 256 for i in range(2 * 784))
labels = struct.pack(">II", 0x801, 3) + bytes([0, 5, 9])
write("idx_raw", "images2.idx", images)
write("idx_raw", "images2.idx.gz", gz(images))
write("idx_raw", "labels3.idx", labels)
write("idx_raw", "labels3.idx.gz", gz(labels))
# A small gzip file whose payload (1400 blank images, 1.1 MB) is more than the
# reader's first buffer: the buffer must grow, within the bound deflate's
# ratio puts on the file.
blank = struct.pack(">IIII", 0x803, 1400, 28, 28) + bytes(1400 * 784)
write("idx_raw", "images1400_blank.idx.gz", gz(blank))
# fuzz_idx_gzip compresses its input itself.
write("idx_gzip", "images2.idx", images)
write("idx_gzip", "labels3.idx", labels)


# ---- safetensors: fuzz_safetensors.c's model ------------------------------------
# fc = linear 3 -> 2 with bias; bn = batch norm of 2 channels.
TENSORS = [
    ("fc.weight", "F32", [2, 3]),
    ("fc.bias", "F32", [2]),
    ("bn.weight", "F32", [2]),
    ("bn.bias", "F32", [2]),
    ("bn.running_mean", "F32", [2]),
    ("bn.running_var", "F32", [2]),
    ("bn.num_batches_tracked", "I64", []),
]


def safetensors(order, metadata, scalar_shape=()):
    header, data, at = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in order:
        _, dtype, shape = next(t for t in TENSORS if t[0] == name)
        if name.endswith("num_batches_tracked"):
            shape = list(scalar_shape)
            blob = struct.pack("<q", 7)
        else:
            n = 1
            for s in shape:
                n *= s
            blob = struct.pack("<%df" % n, *[0.25 * (k + 1) for k in range(n)])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(blob)]}
        data += blob
        at += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


names = [t[0] for t in TENSORS]
write("safetensors", "model", safetensors(names, {"format": "pt"}))
write("safetensors", "reordered_meta",
      safetensors(names[::-1], {"format": "pt", "model": "tiny", "epoch": "3"}, scalar_shape=[1]))
write("safetensors", "no_meta", safetensors(names, None))


# ---- hparams: plugin byte (mlp, cnn, rescnn, lenet), then key=value lines -------
write("hparams", "mlp", b"\x00hidden1=64\nhidden2=32\ndropout=0.5")
write("hparams", "cnn", b"\x01dropout=0.25")
write("hparams", "rescnn", b"\x02width=16\nblocks=2")
write("hparams", "lenet", b"\x03c1=8\nc2=12\ndropout=0\nbatchnorm=yes")
write("hparams", "defaults", b"\x00")


# ---- plugin descriptors: fuzz_plugin_desc.c's encoding --------------------------
def s(text):
    if text is None:
        return b"\xff"
    b = text.encode()
    return bytes([len(b)]) + b


def desc(name, description, hparams, exports, assignments=(), flags=0, extra=b""):
    out = bytes([flags]) + extra + s(name) + s(description)
    out += struct.pack("b", len(hparams))
    for hname, htype, default, help_ in hparams:
        out += s(hname) + struct.pack("b", htype) + s(default) + s(help_)
    out += struct.pack("b", len(exports))
    for xname, sig, help_ in exports:
        out += s(xname) + s(sig) + b"\x01" + s(help_)
    for a in assignments:
        out += s(a)
    return out


TYPED_HP = [("n", 1, "3", "an int"), ("lr", 2, "0.001", "a float"),
            ("bias", 3, "yes", "a bool"), ("tag", 4, "plain", "a string")]
TYPED_EXPORTS = [("add_i", "i(ii)", None), ("greet", "s(ms)", "says hello"),
                 ("mix", "d(imlfds)", None), ("bump", "v(m)", None)]
write("plugin_desc", "typed", desc("typed", "every type", TYPED_HP, TYPED_EXPORTS,
                                   ["n=5", "tag=x", "bias=false", "lr=1e-4"]))
write("plugin_desc", "minimal", desc("tiny", "nothing declared", [], []))
write("plugin_desc", "old_minor_raw_abi",
      desc("old", "ABI 1.0 given explicitly", TYPED_HP[:1], [], ["n=1"], flags=3,
           extra=struct.pack("<II", 0x10000, 8 * 11)))


# ---- image: what fmhost predict reads, PNG pictures and IDX image files ----------
def png(width, height, color_type, bit_depth, rows, extra=b""):
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)  # filter type 0 on every row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


grey28 = [bytes((x * 9 + y * 5) % 256 for x in range(28)) for y in range(28)]
write("image", "grey28.png", png(28, 28, 0, 8, grey28))
rgba = [bytes(v for x in range(5) for v in (x * 50, y * 80, 200, 255 - x * 40)) for y in range(3)]
write("image", "rgba5x3.png", png(5, 3, 6, 8, rgba))
palette = (struct.pack(">I", 9) + b"PLTE" + bytes([0, 0, 0, 255, 0, 0, 255, 255, 255])
           + struct.pack(">I", zlib.crc32(b"PLTE" + bytes([0, 0, 0, 255, 0, 0, 255, 255, 255])) & 0xFFFFFFFF))
trns = (struct.pack(">I", 3) + b"tRNS" + bytes([255, 128, 0])
        + struct.pack(">I", zlib.crc32(b"tRNS" + bytes([255, 128, 0])) & 0xFFFFFFFF))
write("image", "palette4x4.png", png(4, 4, 3, 8, [bytes([0, 1, 2, 1])] * 4, palette + trns))
write("image", "grey16_2x2.png", png(2, 2, 0, 16, [b"\x00\x10\xff\xff", b"\x80\x00\x00\x01"]))
write("image", "grey40x30.png",
      png(40, 30, 0, 8, [bytes((x * y) % 256 for x in range(40)) for y in range(30)]))
write("image", "images2.idx", images)
write("image", "images2.idx.gz", gz(images))
