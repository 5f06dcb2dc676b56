"""A trained model directory (decoder weights + config + vocab) and captioning from features.

model/ holds decoder.safetensors, config.json (decoder and encoder settings) and vocab.json:
weights plus plain config, no pickled modules. Training, evaluation and serving all load it here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from imagelingo.data.vocab import Vocab
from imagelingo.encoders import EncoderSpec
from imagelingo.errors import ImageLingoError
from imagelingo.model import BeamResult, CaptionDecoder, DecoderConfig, beam_search

WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE = "decoder.safetensors", "config.json", "vocab.json"


@dataclass
class Caption:
    words: list[str]
    score: float
    alphas: torch.Tensor  # [len(words), regions]

    @property
    def text(self) -> str:
        return " ".join(self.words)


class Captioner:
    def __init__(self, decoder: CaptionDecoder, vocab: Vocab, encoder: EncoderSpec) -> None:
        self.decoder, self.vocab, self.encoder = decoder.eval(), vocab, encoder

    @classmethod
    def load(cls, model_dir: Path) -> Captioner:
        model_dir = Path(model_dir)
        for name in (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE):
            if not (model_dir / name).is_file():
                raise ImageLingoError(
                    f"{model_dir / name} not found: is {model_dir} a trained "
                    "model directory (`imagelingo train --out`)?"
                )
        config = json.loads((model_dir / CONFIG_FILE).read_text())
        decoder = CaptionDecoder(DecoderConfig(**config["decoder"]))
        decoder.load_state_dict(load_file(model_dir / WEIGHTS_FILE))
        return cls(
            decoder, Vocab.load(model_dir / VOCAB_FILE), EncoderSpec.from_dict(config["encoder"])
        )

    def caption_features(
        self,
        features: torch.Tensor,
        beam_width: int = 3,
        max_len: int = 30,
        length_penalty: float = 0.0,
        batch_size: int = 100,
    ) -> list[Caption]:
        """Caption a batch of region features [N, R, F], `batch_size` images per beam search."""
        captions = []
        for start in range(0, len(features), batch_size):
            results: list[BeamResult] = beam_search(
                self.decoder,
                features[start : start + batch_size].float(),
                beam_width,
                max_len,
                self.vocab.start_id,
                self.vocab.end_id,
                length_penalty,
                # a caption with "<unk>" in it is never the better answer
                banned_ids=(self.vocab.pad_id, self.vocab.start_id, self.vocab.unk_id),
            )
            captions += [Caption(self.vocab.decode(r.tokens), r.score, r.alphas) for r in results]
        return captions


def save_model_dir(
    model_dir: Path, decoder: CaptionDecoder, vocab: Vocab, encoder: EncoderSpec
) -> None:
    from safetensors.torch import save_file

    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{WEIGHTS_FILE}.tmp"
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, tmp)
    tmp.replace(model_dir / WEIGHTS_FILE)
    config = {"decoder": decoder.config.to_dict(), "encoder": encoder.to_dict()}
    (model_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    vocab.save(model_dir / VOCAB_FILE)


def caption_image_files(
    model_dir: Path, paths: list[Path], beam_width: int = 3, max_len: int = 30
) -> list[Caption]:
    """Caption image files end to end: the model's encoder, then the decoder, in one batch."""
    from PIL import Image, UnidentifiedImageError

    from imagelingo.encoders import build_encoder, preprocess

    captioner = Captioner.load(model_dir)
    encoder, _ = build_encoder(captioner.encoder.name)
    pixels = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pixels.append(preprocess(image, captioner.encoder))
        except (OSError, UnidentifiedImageError) as exc:
            raise ImageLingoError(f"{path}: cannot read image: {exc}") from exc
    with torch.inference_mode():
        # the memory format the served encoder uses (serving/runtime.py): same numerics
        features = encoder(torch.stack(pixels).contiguous(memory_format=torch.channels_last))
    return captioner.caption_features(features, beam_width, max_len)
