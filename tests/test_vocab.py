"""Vocabulary: TRAIN captions only, lower-cased, min frequency, special tokens first."""

from imagelingo.data.dataset import ImageRecord, write_records
from imagelingo.data.text import tokenize
from imagelingo.inference.vocab import SPECIAL_TOKENS, Vocab
from imagelingo.vocab import build_vocab, build_vocab_stage


def test_tokenizer_lowercases_and_drops_punctuation_offline():
    assert tokenize("A man's dog, running .") == ["a", "man's", "dog", "running"]


def test_words_below_min_freq_are_left_out_and_specials_come_first():
    vocab, counts = build_vocab([["a", "dog"], ["a", "cat"], ["a", "dog"]], min_freq=2)
    assert vocab.words == (*SPECIAL_TOKENS, "a", "dog")
    assert counts["cat"] == 1


def test_encode_wraps_in_start_end_and_maps_unknown_words():
    vocab, _ = build_vocab([["a", "dog"]], min_freq=1)
    ids = vocab.encode(["a", "zebra"])
    assert ids == [vocab.start_id, vocab.words.index("a"), vocab.unk_id, vocab.end_id]
    assert vocab.decode(ids) == ["a", "<unk>"]


def test_decode_stops_at_end():
    vocab, _ = build_vocab([["a", "dog"]], min_freq=1)
    assert vocab.decode([vocab.words.index("dog"), vocab.end_id, vocab.words.index("a")]) == ["dog"]


def test_vocab_is_built_from_train_captions_only_and_round_trips(tmp_path):
    write_records(
        tmp_path,
        [
            ImageRecord("a.jpg", "train", ["A Dog runs .", "a dog sits"]),
            ImageRecord("b.jpg", "test", ["A test-only zebra .", "zebra zebra"]),
        ],
    )
    record = build_vocab_stage(tmp_path, tmp_path / "vocab", min_freq=1)
    vocab = Vocab.load(tmp_path / "vocab" / "vocab.json")
    assert "zebra" not in vocab.words
    assert set(vocab.words[4:]) == {"a", "dog", "runs", "sits"}
    assert record["counts"]["vocab_size"] == len(vocab) == 8
