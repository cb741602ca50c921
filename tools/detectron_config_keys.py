#!/usr/bin/env python3
"""Prints, as Swift `(key, ConfigValue)` pairs, the keys of Detectron's default config tree
(`detectron/core/config.py`) that `Sources/Engine/Config/ConfigDefaults.swift` does not list yet,
with Detectron's default values. Used to write `Sources/Engine/Config/DetectronKeys.swift`, so
that every key of Detectron's tree is known to the engine (and refused by name when it is set to
something this engine does not implement).

    python3 tools/detectron_config_keys.py path/to/detectron/core/config.py

Needs numpy (the tree holds numpy arrays). Only the `__C.… = …` assignments are evaluated.
"""
import ast
import os
import re
import sys

import numpy as np


class Tree(dict):
    def __getattr__(self, k):
        return self[k]

    def __setattr__(self, k, v):
        self[k] = v


def detectron_tree(path):
    module = ast.parse(open(path).read())
    assignments = [n for n in module.body if isinstance(n, ast.Assign) and any(
        isinstance(t, ast.Attribute) or (isinstance(t, ast.Name) and t.id == '__C') for t in n.targets)]
    env = {'AttrDict': Tree, 'np': np, 'os': os, 'osp': os.path}
    exec(compile(ast.Module(body=assignments, type_ignores=[]), path, 'exec'), env)
    return env['__C']


def leaves(tree, prefix=''):
    for k, v in tree.items():
        if isinstance(v, Tree):
            yield from leaves(v, prefix + k + '.')
        else:
            yield prefix + k, v


def swift(v):
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, bool):
        return '.bool(%s)' % ('true' if v else 'false')
    if isinstance(v, int):
        return '.int(%d)' % v
    if isinstance(v, float):
        return '.float(%r)' % v
    if isinstance(v, str):
        return '.string("%s")' % v
    if isinstance(v, tuple):
        return 't([%s])' % ', '.join(swift(x) for x in v)
    if isinstance(v, list):
        return 'l([%s])' % ', '.join(swift(x) for x in v)
    if v is None:
        return '.none'
    raise ValueError('no Swift form for %r' % (v,))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ours = open(os.path.join(here, '..', 'Sources', 'Engine', 'Config', 'ConfigDefaults.swift')).read()
    known = set(re.findall(r'\("([A-Z_]+(?:\.[A-Z0-9_]+)*)", [.tl]', ours))
    for key, value in leaves(detectron_tree(sys.argv[1])):
        if key not in known:
            print('("%s", %s),' % (key, swift(value)))


if __name__ == '__main__':
    main()
