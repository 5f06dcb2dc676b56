"""The evaluation report: sample test images, generated vs reference captions, attention per word.

One self-contained HTML file (images inlined as base64 PNG/JPEG) that the KFP UI and MLflow show.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from imagelingo.data.dataset import ImageRecord, image_path
from imagelingo.inference.captioner import Caption
from imagelingo.metrics import LABELS, METRICS

THUMB = 224
ATTENTION_THUMB = 112


def _data_uri(image: Image.Image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=85)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def attention_overlay(
    image: Image.Image, alpha: np.ndarray, size: int = ATTENTION_THUMB
) -> Image.Image:
    """Brighten the regions the decoder attended to; darken the rest."""
    side = int(math.isqrt(alpha.size))
    grid = alpha.reshape(side, side)
    grid = (grid - grid.min()) / max(float(grid.max() - grid.min()), 1e-8)
    mask = Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    base = image.convert("RGB").resize((size, size))
    dark = Image.new("RGB", (size, size), (0, 0, 0))
    return Image.composite(base, Image.blend(base, dark, 0.75), mask)


def write_report(
    path: Path,
    dataset_dir: Path,
    records: list[ImageRecord],
    captions: list[Caption],
    metrics: dict,
) -> None:
    rows = []
    for record, caption in zip(records, captions, strict=True):
        with Image.open(image_path(dataset_dir, record)) as image:
            image = image.convert("RGB")
            thumb = _data_uri(image.resize((THUMB, THUMB)))
            words = "".join(
                f'<figure><img src="{_data_uri(attention_overlay(image, a.numpy()))}" '
                f'alt="attention for {html.escape(w)}"><figcaption>{html.escape(w)}</figcaption>'
                "</figure>"
                for w, a in zip(caption.words, caption.alphas, strict=True)
            )
        references = "".join(f"<li>{html.escape(c)}</li>" for c in record.captions)
        rows.append(
            f'<section><h3>{html.escape(record.image)}</h3><img src="{thumb}" alt="test image">'
            f"<p><b>generated</b> (log-prob {caption.score:.2f}): {html.escape(caption.text)}</p>"
            f"<p><b>references</b></p><ol>{references}</ol>"
            f'<div class="attention">{words}</div></section>'
        )
    names = [k for k in METRICS if k in metrics]
    scores = (
        "<table><tr>"
        + "".join(f"<th>{LABELS[k]}</th>" for k in names)
        + "</tr><tr>"
        + "".join(f"<td>{metrics[k]:.4f}</td>" for k in names)
        + "</tr></table>"
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ImageLingo evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
section {{ border-top: 1px solid #ccc; padding: 1em 0; }}
.attention {{ display: flex; flex-wrap: wrap; gap: 4px; }}
figure {{ margin: 0; text-align: center; font-size: 12px; }}
th, td {{ padding: 2px 8px; text-align: right; }}
</style></head><body>
<h1>ImageLingo evaluation</h1>
<p>{metrics["split"]} split, {metrics["images"]} images, beam width {metrics["beam_width"]}.
BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (0-10) as the COCO caption evaluation computes them (PTB
tokens); BLEU (nltk) on this project's tokens, as training's validation scores it.</p>
{scores}
{"".join(rows)}
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")
