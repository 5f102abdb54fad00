"""The tiny-model helpers the tests, benchmark and fallback demo stand on."""

from unifl.core.models.tiny import write_clip_tokenizer


def test_clip_tokenizer_with_and_without_whole_words(tmp_path):
    plain = write_clip_tokenizer(tmp_path / "plain")
    assert plain("a cat").input_ids[0] == plain.bos_token_id and plain("a cat").input_ids[-1] == plain.eos_token_id
    words = write_clip_tokenizer(tmp_path / "words", ["cat", "red"])
    assert len(words("a red cat").input_ids) == 5  # bos, a, red, cat, eos: each listed word is one token
    assert len(plain("a red cat").input_ids) > 5
