"""Caption quality, two ways.

- `bleu1`..`bleu4`: corpus BLEU (nltk) on our own tokens (data.text.tokenize). What training's
  validation scores and what every earlier result in benchmarks/RESULTS.md reports; kept for that
  continuity.
- The COCO caption metrics, as the captioning literature reports them (pycocoevalcap, the
  coco-caption code): raw captions go through the Stanford PTB tokenizer (lower-cased,
  punctuation dropped), then `coco_bleu1`..`coco_bleu4` (BLEU, "closest" reference length),
  `meteor` (METEOR 1.5), `rouge_l` (ROUGE-L, beta 1.2) and `cider` (CIDEr-D: the coco-caption
  CIDEr, with clipping and the length penalty, sigma 6, x10; its idf comes from the references of
  the scored split). `spice` only where SPICE can run offline (its Stanford CoreNLP 3.6.0 jars are
  present); otherwise it is skipped with one log line. All on a 0-1 scale except CIDEr-D (0-10).

The tokenizer and METEOR are Java programs: Java 8+ must be on PATH.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from nltk.translate.bleu_score import corpus_bleu

from imagelingo.errors import ImageLingoError

log = logging.getLogger(__name__)

BLEU_WEIGHTS = {
    "bleu1": (1.0,),
    "bleu2": (0.5, 0.5),
    "bleu3": (1 / 3, 1 / 3, 1 / 3),
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}
COCO_METRICS = (
    "coco_bleu1",
    "coco_bleu2",
    "coco_bleu3",
    "coco_bleu4",
    "meteor",
    "rouge_l",
    "cider",
)
# Every score evaluation reports (spice only where it runs), in the order reports show them.
METRICS = (*BLEU_WEIGHTS, *COCO_METRICS, "spice")
GATE_METRICS = ("bleu4", "cider")  # what params.yaml's evaluate.gate_metric may name
LABELS = {
    **{f"bleu{n}": f"BLEU-{n} (nltk)" for n in range(1, 5)},
    **{f"coco_bleu{n}": f"BLEU-{n}" for n in range(1, 5)},
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr-D",
    "spice": "SPICE",
}


def bleu_scores(references: list[list[list[str]]], hypotheses: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 on a 0-1 scale; each hypothesis is scored against all its references."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference sets for {len(hypotheses)} hypotheses")
    with warnings.catch_warnings():
        # nltk warns when a higher-order n-gram never matches; the score 0 is the right answer.
        warnings.simplefilter("ignore", UserWarning)
        return {
            name: float(corpus_bleu(references, hypotheses, weights=w))
            for name, w in BLEU_WEIGHTS.items()
        }


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ImageLingoError(
            "java not found on PATH: the COCO caption metrics (pycocoevalcap's PTB tokenizer and "
            "METEOR) are Java programs; install a Java 8+ runtime (e.g. apt-get install "
            "openjdk-17-jre-headless; the training image has one)"
        )
    return java


def ptb_tokenize(sentences: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer (same jar, flags and punctuation list), one line per sentence.
    Its own wrapper writes a temporary file next to the jar, in site-packages, which the training
    image's user cannot write; this one writes it to the system temp folder."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    # one line per sentence: any line or page break inside one (\r, \x0c, \u2028, ...) would make
    # the tokenizer start a new line and shift every later sentence onto the wrong image
    text = "\n".join(" ".join(s.split()) for s in sentences)
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as handle:
        handle.write(text.encode())
    try:
        command = [require_java(), "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer"]
        command += ["-preserveLines", "-lowerCase", handle.name]
        result = subprocess.run(command, capture_output=True, check=False)
    finally:
        os.remove(handle.name)
    lines = result.stdout.decode().split("\n")
    if result.returncode != 0 or len(lines) != len(sentences):
        raise ImageLingoError(
            f"the PTB tokenizer ({jar.name}) failed (exit {result.returncode}, "
            f"{len(lines)} lines for {len(sentences)} captions): {result.stderr.decode()[-500:]}"
        )
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in lines]


def coco_scores(references: dict[str, list[str]], hypotheses: dict[str, str]) -> dict[str, float]:
    """The COCO caption metrics of raw `hypotheses` (one caption per image key) against raw
    `references` (every reference caption of the same keys); the keys' order is the order they
    are scored in, so the same inputs give the same floats."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _ptb_inputs(references, hypotheses)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"coco_bleu{n}": float(b) for n, b in enumerate(bleu, start=1)}
    scores["meteor"] = _meteor(gts, res)
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    scores["cider"] = float(Cider().compute_score(gts, res)[0])
    spice = _spice(gts, res)
    if spice is not None:
        scores["spice"] = spice
    return scores


def _ptb_inputs(references: dict[str, list[str]], hypotheses: dict[str, str]) -> tuple[dict, dict]:
    """pycocoevalcap's (gts, res): the PTB tokens of every reference and hypothesis, by key, in
    one tokenizer run."""
    if list(references) != list(hypotheses):
        raise ValueError("references and hypotheses must have the same keys in the same order")
    if any(not refs for refs in references.values()):
        raise ValueError("every image needs at least one reference caption")
    keys = list(references)
    counts = [len(references[k]) for k in keys]
    tokens = ptb_tokenize([c for k in keys for c in references[k]] + [hypotheses[k] for k in keys])
    gts, offset = {}, 0
    for key, count in zip(keys, counts, strict=True):
        gts[key], offset = tokens[offset : offset + count], offset + count
    return gts, {key: [tokens[offset + i]] for i, key in enumerate(keys)}


def cider_per_image(references: dict[str, list[str]], hypotheses: dict[str, str]) -> list[float]:
    """Each image's CIDEr-D, in the keys' order (the idf from all of `references`, as in
    coco_scores): their mean is coco_scores' `cider`. For a bootstrap over images."""
    from pycocoevalcap.cider.cider import Cider

    gts, res = _ptb_inputs(references, hypotheses)
    return [float(x) for x in Cider().compute_score(gts, res)[1]]


_METEOR_START = threading.Lock()  # one jar, also when prestart_meteor's thread is still starting it


def prestart_meteor() -> None:
    """Start the METEOR jar in a background thread: loading its paraphrase table takes ~5 s,
    which then passes while the caller decodes instead of after it. A failure here is left for
    the scoring's own call to raise, with its message."""

    def start() -> None:
        with contextlib.suppress(Exception):
            _meteor_jar()

    threading.Thread(target=start, name="meteor-start", daemon=True).start()


def _meteor_jar():
    with _METEOR_START:
        return _started_meteor_jar()


@functools.lru_cache(maxsize=1)
def _started_meteor_jar():
    """One METEOR 1.5 jar per process, started on first use: it takes seconds to load its
    paraphrase table, and a process that scores several times (tests, a benchmark) pays once."""
    from pycocoevalcap.meteor.meteor import Meteor

    require_java()
    meteor = Meteor()
    atexit.register(_stop, meteor.meteor_p)
    return meteor


def _stop(process: subprocess.Popen) -> None:
    """End the jar with the process that started it (not orphaned to outlive it), and wait for
    it, so a benchmark's wait4 of this process counts the jar's memory too."""
    if process.poll() is None:
        process.kill()
    process.wait()


def _meteor(gts: dict, res: dict) -> float:
    meteor = _meteor_jar()
    try:
        return float(meteor.compute_score(gts, res)[0])
    except (ValueError, OSError) as exc:  # the jar died or answered nothing (memory, a bad install)
        _started_meteor_jar.cache_clear()
        if meteor.lock.locked():  # a failed compute_score keeps it, and Meteor.__del__ takes it
            meteor.lock.release()
        meteor.meteor_p.kill()
        stderr = meteor.meteor_p.stderr.read().decode(errors="replace")
        raise ImageLingoError(f"METEOR (meteor-1.5.jar) failed: {exc} {stderr[-500:]}") from exc


def spice_jars() -> list[Path]:
    """The Stanford CoreNLP 3.6.0 jars SPICE needs; pycocoevalcap downloads them on first use."""
    from pycocoevalcap.spice import get_stanford_models as models

    lib = Path(models.SPICEDIR) / models.SPICELIB
    return [lib / f"{models.JAR}.jar", lib / f"{models.JAR}-models.jar"]


def _spice(gts: dict, res: dict) -> float | None:
    missing = [str(jar) for jar in spice_jars() if not jar.is_file()]
    if missing:
        log.info(
            "SPICE skipped: it needs Stanford CoreNLP 3.6.0 (%s), which pycocoevalcap downloads "
            "on first use; none is installed and no download is attempted",
            ", ".join(missing),
        )
        return None
    from pycocoevalcap.spice.spice import Spice

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return float(Spice().compute_score(gts, res)[0])
        except (OSError, subprocess.CalledProcessError) as exc:
            raise ImageLingoError(f"SPICE (spice-1.0.jar) failed: {exc}") from exc


def caption_metrics(references: list[list[str]], hypotheses: list[str], keys: list[str]) -> dict:
    """Every metric of METRICS for raw hypothesis captions (one per image, in `keys` order) against
    each image's raw reference captions, 0-1 (CIDEr-D 0-10), rounded to 6 places. The nltk BLEU
    scores our tokens of the references against the hypothesis's words as the captioner wrote them
    (space-separated: `Caption.text`), the COCO metrics the PTB tokens of both."""
    from imagelingo.data.text import tokenize

    if not len(references) == len(hypotheses) == len(keys):
        raise ValueError(f"{len(references)} reference sets, {len(hypotheses)} captions")
    scores = bleu_scores(
        [[tokenize(c) for c in refs] for refs in references], [h.split() for h in hypotheses]
    )
    scores |= coco_scores(
        dict(zip(keys, references, strict=True)), dict(zip(keys, hypotheses, strict=True))
    )
    return {name: round(scores[name], 6) for name in METRICS if name in scores}
