#!/usr/bin/env python3
"""Compares the arrays of two safetensors checkpoints bitwise, ignoring their metadata (the
merged config, categories, training state), e.g. to check that a change left training unchanged:

    python3 tools/compare_weights.py A.safetensors B.safetensors

Prints the number of arrays and each one that differs (name, and how many bytes); exits 1 when
any array differs or exists in one file only. Standard library only.
"""
import json
import struct
import sys


def arrays(path):
    with open(path, 'rb') as f:
        data = f.read()
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n])
    header.pop('__metadata__', None)
    body = data[8 + n:]
    return {k: (v['dtype'], tuple(v['shape']), body[v['data_offsets'][0]:v['data_offsets'][1]]) for k, v in header.items()}


def main():
    a, b = arrays(sys.argv[1]), arrays(sys.argv[2])
    bad = 0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print('%s: only in %s' % (name, sys.argv[1] if name in a else sys.argv[2]))
            bad += 1
        elif a[name] != b[name]:
            diff = sum(x != y for x, y in zip(a[name][2], b[name][2]))
            print('%s: differs (%s %s vs %s %s, %d bytes differ)' % (name, a[name][0], a[name][1], b[name][0], b[name][1], diff))
            bad += 1
    print('%d arrays, %d differ' % (len(set(a) | set(b)), bad))
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
