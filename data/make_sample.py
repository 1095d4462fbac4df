#!/usr/bin/env python3
"""Cut data/sample/ from the full FashionMNIST dataset.

Writes the first 3,000 training and the first 500 test images and labels in
the dataset's own layout (gzip'd IDX files with the original names), so the
sample can stand in for the real data anywhere fmhost takes a data directory.
"First N" rather than a random pick keeps the cut reproducible, and gzip's
mtime is fixed at 0 so rerunning the script gives byte-identical files.

    python3 data/make_sample.py [--src DIR] [--dst DIR] [--train N] [--test N]

Standard library only.
"""

import argparse
import gzip
import os
import struct
import sys

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
SIDE = 28


def read_idx(path, magic, header_len):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < header_len:
        sys.exit(f"{path}: too short for an IDX header")
    fields = struct.unpack(">" + "I" * (header_len // 4), raw[:header_len])
    if fields[0] != magic:
        sys.exit(f"{path}: magic 0x{fields[0]:08x}, expected 0x{magic:08x}")
    return fields, raw[header_len:]


def write_gz(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw:
        # filename="" and mtime=0 keep the gzip header free of run-specific bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(payload)
    os.replace(tmp, path)


def cut(src, dst, prefix, count):
    (_, n, rows, cols), pixels = read_idx(
        os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"), IMAGE_MAGIC, 16)
    (_, nl), labels = read_idx(
        os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"), LABEL_MAGIC, 8)
    if (rows, cols) != (SIDE, SIDE) or n != nl or count > n:
        sys.exit(f"{src}: unexpected {prefix} files ({n} images {rows}x{cols}, {nl} labels)")
    size = rows * cols
    write_gz(os.path.join(dst, f"{prefix}-images-idx3-ubyte.gz"),
             struct.pack(">IIII", IMAGE_MAGIC, count, rows, cols) + pixels[:count * size])
    write_gz(os.path.join(dst, f"{prefix}-labels-idx1-ubyte.gz"),
             struct.pack(">II", LABEL_MAGIC, count) + labels[:count])
    print(f"{prefix}: {count} of {n} images -> {dst}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="/usr/share/datasets/fashion-mnist",
                    help="directory with the full dataset (apt-get install dataset-fashion-mnist)")
    ap.add_argument("--dst", default=os.path.join(here, "sample"))
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--test", type=int, default=500)
    args = ap.parse_args()
    os.makedirs(args.dst, exist_ok=True)
    cut(args.src, args.dst, "train", args.train)
    cut(args.src, args.dst, "t10k", args.test)


if __name__ == "__main__":
    main()
