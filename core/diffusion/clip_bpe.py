"""CLIP's byte-level BPE alphabet, shared by the shipped-vocabulary build script and the tiny tokenizer."""

from __future__ import annotations


def bytes_to_unicode() -> list[str]:
    """CLIP's (and GPT-2's) reversible byte → printable character table, indexed by byte order of use.

    The 188 printable bytes map to themselves; the other 68 map to code points 256… so that every byte
    sequence has a printable, whitespace-free spelling.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]
