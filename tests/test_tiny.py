"""The tiny-model helpers the tests, benchmark and fallback demo stand on."""

from unifl.core.diffusion.tiny import write_clip_tokenizer


def test_clip_tokenizer_with_and_without_whole_words(tmp_path):
    plain = write_clip_tokenizer(tmp_path / "plain")
    assert plain("a cat").input_ids[0] == plain.bos_token_id and plain("a cat").input_ids[-1] == plain.eos_token_id
    words = write_clip_tokenizer(tmp_path / "words", ["cat", "red"])
    assert len(words("a red cat").input_ids) == 5  # bos, a, red, cat, eos: each listed word is one token
    assert len(plain("a red cat").input_ids) > 5


def test_every_pocket_word_is_one_token_in_the_slow_and_fast_tokenizer(tmp_path):
    """Words sharing letter pairs ("right", "triangle") once split into pieces, pushing captions past the limit."""
    from transformers import CLIPTokenizerFast
    from unifl.pocket.world.world import VOCABULARY

    slow = write_clip_tokenizer(tmp_path, VOCABULARY)
    fast = CLIPTokenizerFast.from_pretrained(str(tmp_path))
    for tokenizer in (slow, fast):
        split = [w for w in VOCABULARY if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
        assert not split, f"{type(tokenizer).__name__} splits {split}"
