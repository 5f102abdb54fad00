"""Regenerate ``clip_tokenizer/vocab.json`` and ``clip_tokenizer/merges.txt`` from OpenAI's BPE file.

CLIP's tokenizer (SD1.x's ``tokenizer`` and both SDXL tokenizers) is fully determined by
``bpe_simple_vocab_16e6.txt.gz``, which the MIT-licensed ``open-clip-torch`` wheel ships. This script
applies OpenAI ``simple_tokenizer.py``'s construction, so the shipped files can be checked or rebuilt
offline without a model hub::

    scratch=$(mktemp -d)
    pip download open-clip-torch --no-deps -d "$scratch"
    unzip -o "$scratch"/open_clip_torch-*.whl 'open_clip/bpe_simple_vocab_16e6.txt.gz' -d "$scratch"
    python core/diffusion/model_configs/build_clip_tokenizer.py "$scratch"/open_clip/bpe_simple_vocab_16e6.txt.gz   # with the project installed (make setup)

(``model_configs/README.md`` has the pinned version and the comparison with the shipped files.)

Construction: skip the header line, keep the next 49152 - 256 - 2 merges; the vocabulary is the 256
byte symbols, the same with ``</w>``, one token per merge, then ``<|startoftext|>`` and
``<|endoftext|>`` (49408 tokens in all).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path

from unifl.core.diffusion.clip_bpe import bytes_to_unicode

VOCAB_SIZE = 49408
NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2


def build(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    """``(vocab, merges)`` exactly as OpenAI CLIP's ``SimpleTokenizer`` builds them."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    symbols = bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise SystemExit(f"{bpe_gz}: expected {VOCAB_SIZE} distinct tokens, got {len(vocab)}; is this CLIP's bpe_simple_vocab_16e6.txt.gz?")
    return vocab, merges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bpe_gz", type=Path, help="path to bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("clip_tokenizer"), help="output folder (default: the shipped one)")
    args = parser.parse_args()
    vocab, merges = build(args.bpe_gz)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (args.out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"sha256({args.bpe_gz.name}) = {hashlib.sha256(args.bpe_gz.read_bytes()).hexdigest()}")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
