"""A deterministic synthetic dataset of simple scenes with compositional captions.

Coloured shapes at named positions, written in the Flickr8k layout (images/, token file, split
files) so it goes through exactly the same ingest code as the real dataset. Colour, shape and
position are things a frozen ImageNet encoder sees, so a decoder trained for a few minutes on CPU
clearly beats an untrained one: that is what the tests and the offline demo rely on.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from imagelingo.data.flickr8k import SPLIT_FILES, TOKEN_FILE

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
# Where the centre of a lone shape goes, as a fraction of the image side.
POSITIONS = {
    "on the left": (0.25, 0.5),
    "on the right": (0.75, 0.5),
    "at the top": (0.5, 0.25),
    "at the bottom": (0.5, 0.75),
    "in the middle": (0.5, 0.5),
}
SIZES = {"small": 0.14, "big": 0.26}  # radius as a fraction of the image side
IMAGE_SIDE = 128
SPLIT_SHARES = (("train", 0.7), ("dev", 0.15), ("test", 0.15))


def _draw(
    draw: ImageDraw.ImageDraw, shape: str, colour: str, centre: tuple[float, float], radius: float
) -> None:
    cx, cy = centre[0] * IMAGE_SIDE, centre[1] * IMAGE_SIDE
    r = radius * IMAGE_SIDE
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def _one_shape_scene(rng: random.Random, draw: ImageDraw.ImageDraw) -> list[str]:
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    position, size = rng.choice(list(POSITIONS)), rng.choice(list(SIZES))
    _draw(draw, shape, colour, POSITIONS[position], SIZES[size])
    return [
        f"A {size} {colour} {shape} {position} .",
        f"A {colour} {shape} {position} .",
        f"There is a {size} {colour} {shape} {position} .",
        f"A {size} {colour} {shape} .",
        f"One {colour} {shape} {position} .",
    ]


def _two_shape_scene(rng: random.Random, draw: ImageDraw.ImageDraw) -> list[str]:
    (colour_a, colour_b) = rng.sample(list(COLOURS), 2)
    shape_a, shape_b = rng.choice(SHAPES), rng.choice(SHAPES)
    horizontal = rng.random() < 0.5
    centre_a, centre_b = ((0.27, 0.5), (0.73, 0.5)) if horizontal else ((0.5, 0.27), (0.5, 0.73))
    _draw(draw, shape_a, colour_a, centre_a, 0.17)
    _draw(draw, shape_b, colour_b, centre_b, 0.17)
    a, b = f"{colour_a} {shape_a}", f"{colour_b} {shape_b}"
    relation, inverse = ("left of", "right of") if horizontal else ("above", "below")
    return [
        f"A {a} {relation} a {b} .",
        f"A {b} {inverse} a {a} .",
        f"A {a} and a {b} .",
        f"There is a {a} {relation} a {b} .",
        f"Two shapes : a {a} {relation} a {b} .",
    ]


def generate_synthetic(out_dir: Path, num_images: int = 600, seed: int = 0) -> Path:
    """Write `num_images` scenes in the Flickr8k layout under `out_dir` and return it."""
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    token_lines, names = [], []
    for index in range(num_images):
        name = f"synthetic_{index:05d}.jpg"
        background = tuple(rng.randint(200, 245) for _ in range(3))
        image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), background)
        draw = ImageDraw.Draw(image)
        scene = _one_shape_scene if rng.random() < 0.5 else _two_shape_scene
        captions = scene(rng, draw)
        image.save(image_dir / name, quality=92)
        token_lines += [f"{name}#{n}\t{caption}" for n, caption in enumerate(captions)]
        names.append(name)
    (out_dir / TOKEN_FILE).write_text("\n".join(token_lines) + "\n")
    start = 0
    for split, share in SPLIT_SHARES:
        count = round(share * num_images) if split != "test" else num_images - start
        (out_dir / SPLIT_FILES[split]).write_text("\n".join(names[start : start + count]) + "\n")
        start += count
    return out_dir
