"""CIDEr-D (imagelingo.cider) agrees with the COCO evaluation's own implementation, pycocoevalcap,
when its document frequencies come from the same references; and it behaves as a reward should."""

import pytest
from pycocoevalcap.cider.cider import Cider

from imagelingo.cider import CiderD

REFERENCES = [
    [
        "a dog runs across the green grass".split(),
        "a brown dog is running on grass".split(),
        "the dog runs in a field".split(),
    ],
    [
        "two children play on the beach".split(),
        "kids playing in the sand near the water".split(),
        "two kids on a beach".split(),
        "children build a sand castle".split(),
    ],
    [
        "a man rides a bike down the street".split(),
        "a cyclist on a city street".split(),
    ],
    [
        "a woman in a red coat walks in the snow".split(),
        "a person walking through snow".split(),
        "a woman walks on a snowy path".split(),
    ],
]
CANDIDATES = [
    "a dog runs on the grass".split(),
    "two kids play in the sand on the beach".split(),
    "a man rides a bike".split(),
    "a dog".split(),  # a poor, short caption: the length penalty and few matches
]


def coco(references, candidates):
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(c)] for i, c in enumerate(candidates)}
    return Cider().compute_score(gts, res)


def test_equals_pycocoevalcap_with_the_references_as_corpus():
    expected_mean, expected = coco(REFERENCES, CANDIDATES)
    mean, scores = CiderD(REFERENCES).corpus_score(REFERENCES, CANDIDATES)
    assert scores == pytest.approx(list(expected), abs=1e-6)
    assert mean == pytest.approx(float(expected_mean), abs=1e-6)
    assert len(set(scores)) == len(scores)  # distinct cases, not one number four times


@pytest.mark.parametrize(
    "candidates",
    [
        [r[0] for r in REFERENCES],  # a reference itself
        [["the"], ["on"], [], ["a", "a", "a", "a", "a", "a", "a", "a", "a", "a"]],  # degenerate
        [r[-1][::-1] for r in REFERENCES],  # the words of a reference, reversed
        # n-grams repeated beyond their count in the references: CIDEr-D clips them
        [(r[0][:3] * 3) + r[1][:2] for r in REFERENCES],
    ],
    ids=["a-reference", "degenerate", "reversed", "repeated"],
)
def test_equals_pycocoevalcap_on_edge_cases(candidates):
    expected_mean, expected = coco(REFERENCES, candidates)
    _, scores = CiderD(REFERENCES).corpus_score(REFERENCES, candidates)
    assert scores == pytest.approx(list(expected), abs=1e-6)


def test_identical_captions_score_high_and_disjoint_ones_zero():
    cider = CiderD(REFERENCES)
    refs = cider.references(REFERENCES[0])
    same = cider.score(REFERENCES[0][0], refs)
    assert same > 3.0
    assert cider.score("an airplane flies over mountains".split(), refs) == 0.0
    assert cider.score([], refs) == 0.0


def test_document_frequencies_come_from_the_corpus_given_once():
    # "a dog" is in every image of this corpus, so it is worth nothing; in REFERENCES it is rare
    everywhere = [[["a", "dog", "sits"]], [["a", "dog", "jumps"]]]
    refs = [["a", "dog", "runs"]]
    rare = CiderD(REFERENCES).score(["a", "dog"], CiderD(REFERENCES).references(refs))
    common = CiderD(everywhere).score(["a", "dog"], CiderD(everywhere).references(refs))
    assert common == 0.0 < rare
