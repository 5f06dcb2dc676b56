"""Beam search on a tiny hand-built model whose best sequence is known.

Tokens: 0 pad, 1 start, 2 end, 3 "x", 4 "y". From <start> the model prefers x (0.6) over y (0.4);
after x every continuation is flat, after y it is certain to end. Greedy takes x and ends with
probability 0.6 * 0.34 ~ 0.20; the best sequence is "y <end>" with 0.4 * 1.0 = 0.40. A beam of
two finds it; a beam of one cannot.
"""

import math

import torch

from imagelingo.inference.decoder import CaptionDecoder, DecoderConfig, beam_search
from imagelingo.train import TrainConfig, decoder_config

START, END, X, Y = 1, 2, 3, 4


def _row(probabilities: dict[int, float]) -> torch.Tensor:
    row = torch.full((5,), 1e-9)
    for token, p in probabilities.items():
        row[token] = p
    return row.log()


TRANSITIONS = {
    START: _row({X: 0.6, Y: 0.4}),
    X: _row({X: 0.33, Y: 0.33, END: 0.34}),
    Y: _row({END: 1.0}),
    END: _row({END: 1.0}),
}


class HandBuiltModel:
    """Scores depend only on the previous word; the state is a dummy with a batch dimension."""

    def init_state(self, features):
        return (features[:, 0, :1],)

    def step(self, words, state):
        scores = torch.stack([TRANSITIONS.get(int(w), TRANSITIONS[END]) for w in words])
        return scores, state, torch.ones(len(words), 1)


# A small decoder: 30 words, 9 regions of 16 features.
TINY = DecoderConfig(30, 16, embed_dim=8, hidden_dim=16, attention_dim=8, context_dim=8, dropout=0)


def test_beam_finds_the_known_best_sequence_that_greedy_misses():
    features = torch.zeros(1, 1, 1)
    greedy = beam_search(
        HandBuiltModel(), features, beam_width=1, max_len=5, start_id=START, end_id=END
    )[0]
    beam = beam_search(
        HandBuiltModel(), features, beam_width=2, max_len=5, start_id=START, end_id=END
    )[0]
    assert greedy.tokens[0] == X
    assert beam.tokens == [Y]
    assert math.isclose(beam.score, math.log(0.4), rel_tol=1e-5)


def test_each_image_in_a_batch_gets_its_own_best_sequence():
    results = beam_search(
        HandBuiltModel(), torch.zeros(3, 1, 1), beam_width=3, max_len=5, start_id=START, end_id=END
    )
    assert [r.tokens for r in results] == [[Y]] * 3


def test_batched_beam_search_equals_one_image_at_a_time():
    torch.manual_seed(0)
    decoder = CaptionDecoder(TINY).eval()
    features = torch.randn(4, 9, 16)
    together = beam_search(decoder, features, 3, 12, START, END)
    alone = [beam_search(decoder, features[i : i + 1], 3, 12, START, END)[0] for i in range(4)]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    for a, b in zip(together, alone, strict=True):
        assert math.isclose(a.score, b.score, rel_tol=1e-4)
        assert a.alphas.shape == (len(a.tokens), 9)


def test_attention_of_each_word_sums_to_one():
    torch.manual_seed(0)
    decoder = CaptionDecoder(decoder_config(TrainConfig(), vocab_size=30, feature_dim=16)).eval()
    result = beam_search(decoder, torch.randn(1, 9, 16), 3, 6, START, END)[0]
    assert torch.allclose(result.alphas.sum(dim=1), torch.ones(len(result.tokens)), atol=1e-5)


def test_banned_words_are_never_emitted():
    # Ban "y": the known best sequence is gone, so the beam must settle for a caption with x.
    result = beam_search(
        HandBuiltModel(),
        torch.zeros(1, 1, 1),
        beam_width=3,
        max_len=5,
        start_id=START,
        end_id=END,
        banned_ids=(Y,),
    )[0]
    assert Y not in result.tokens and result.tokens[0] == X


def test_stopping_once_no_live_beam_can_win_changes_nothing(monkeypatch):
    """Beam search stops when every image's best finished beam outscores its live beams; the
    result equals running until every beam has ended (or max_len)."""
    import imagelingo.inference.decoder as model

    torch.manual_seed(1)
    decoder = CaptionDecoder(TINY).eval()
    decoder.out.bias.data[END] = 2.5  # captions end after a few words, at different steps
    features = torch.randn(6, 9, 16)
    steps = {"early": 0, "full": 0}
    step = decoder.step

    def counting(name):
        def counted(words, state):
            steps[name] += 1
            return step(words, state)

        return counted

    monkeypatch.setattr(decoder, "step", counting("early"))
    early = beam_search(decoder, features, 3, 25, START, END)
    monkeypatch.setattr(model, "_settled", lambda *_: False)
    monkeypatch.setattr(decoder, "step", counting("full"))
    full = beam_search(decoder, features, 3, 25, START, END)
    assert [r.tokens for r in early] == [r.tokens for r in full]
    assert [r.score for r in early] == [r.score for r in full]
    assert steps["early"] < steps["full"]  # it did stop early


def test_a_live_beam_tied_with_a_finished_one_is_decoded_to_the_end(monkeypatch):
    """From <start>, a word and <end> are equally likely and the word is then certain to end:
    after one step a live beam ties the finished one. Stopping there (>= instead of >) returns
    the unfinished word; decoding on returns the empty caption, as the full search does."""
    import imagelingo.inference.decoder as model

    word, end = 0, END  # a tie found by trying: here stopping at the tie changes the answer
    tied = {START: _row({word: 0.5, end: 0.5}), word: _row({end: 1.0}), end: _row({end: 1.0})}

    class TiedModel(HandBuiltModel):
        def step(self, words, state):
            scores = torch.stack([tied.get(int(w), tied[end]) for w in words])
            return scores, state, torch.ones(len(words), 1)

    features = torch.zeros(1, 1, 1)
    early = beam_search(TiedModel(), features, 2, 5, START, end)
    monkeypatch.setattr(model, "_settled", lambda *_: False)
    full = beam_search(TiedModel(), features, 2, 5, START, end)
    assert [r.tokens for r in early] == [r.tokens for r in full]
    assert [r.score for r in early] == [r.score for r in full]
