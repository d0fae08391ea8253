"""Nested containers of tensors ("pytrees", as in JAX): tuples, lists, dicts and named tuples whose leaves are
anything else (tensors, arrays, numbers, ``None``).

:func:`flatten` returns the leaves in a fixed order and a structure value; :func:`unflatten` rebuilds the
container from new leaves. Dicts keep their insertion order; two structures are equal when their container
types, keys and lengths are.
"""
from __future__ import annotations

_LEAF = "*"


def _is_namedtuple(x):
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def flatten(tree):
    """``(leaves, structure)`` of ``tree``."""
    leaves = []
    return leaves, _flatten(tree, leaves)


def _flatten(x, leaves):
    if isinstance(x, (tuple, list)):
        return (type(x), None, tuple([_flatten(v, leaves) for v in x]))
    if isinstance(x, dict):
        keys = tuple(x)
        return (type(x), keys, tuple([_flatten(x[k], leaves) for k in keys]))
    leaves.append(x)
    return _LEAF


def unflatten(structure, leaves):
    """The container of ``structure`` with ``leaves`` (an iterable, consumed in order) in place."""
    it = iter(leaves)
    out = _unflatten(structure, it)
    for _ in it:
        raise ValueError("unflatten: more leaves than the structure holds")
    return out


def _unflatten(s, it):
    if s is _LEAF:
        return next(it)
    kind, keys, children = s
    values = [_unflatten(c, it) for c in children]
    if keys is not None:
        return kind(zip(keys, values))
    if kind is tuple or kind is list:
        return kind(values)
    if issubclass(kind, tuple) and hasattr(kind, "_fields"):
        return kind(*values)
    return kind(values)


def describe(structure):
    """A short human-readable form of a structure, for error messages."""
    if structure is _LEAF:
        return "leaf"
    kind, keys, children = structure
    if keys is not None:
        inner = ", ".join(f"{k!r}: {describe(c)}" for k, c in zip(keys, children))
        return f"{{{inner}}}" if kind is dict else f"{kind.__name__}({{{inner}}})"
    inner = ", ".join(describe(c) for c in children)
    if kind is list:
        return f"[{inner}]"
    if kind is tuple:
        return f"({inner}{',' if len(children) == 1 else ''})"
    return f"{kind.__name__}({inner})"


def is_leaf(structure):
    return structure is _LEAF
