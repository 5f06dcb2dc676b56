"""Batched serving inference gives exactly the library's captions, for every image in a batch."""

import io

import pytest

from imagelingo.captioning import caption_image_files, load_captioner
from imagelingo.data.dataset import load_records
from imagelingo.serving.images import decode_image
from imagelingo.serving.protocol import Options, prediction


@pytest.fixture(scope="module")
def service(trained_model):
    return load_captioner(trained_model)


def test_batch_captions_equal_the_library_captions(service, trained_model, pipeline_dirs):
    records = load_records(pipeline_dirs["dataset"], "test")[:4]
    paths = [pipeline_dirs["dataset"] / "images" / r.image for r in records]
    served = service.caption_images(
        [decode_image(p.read_bytes(), i) for i, p in enumerate(paths)],
        Options(beam_width=3, max_len=30),
    )
    served = [prediction(caption) for caption in served]  # as both servers answer
    library = caption_image_files(trained_model, paths, beam_width=3, max_len=30)
    assert [s["caption"] for s in served] == [c.text for c in library]
    assert all(set(s) == {"caption", "tokens", "score"} for s in served)
    assert all(s["tokens"] == s["caption"].split() for s in served)


def test_max_len_bounds_the_caption(service, pipeline_dirs):
    record = load_records(pipeline_dirs["dataset"], "test")[0]
    image = decode_image((pipeline_dirs["dataset"] / "images" / record.image).read_bytes())
    assert len(service.caption_images([image], Options(beam_width=2, max_len=2))[0].words) <= 2


def test_png_and_jpeg_of_the_same_scene_get_a_caption(service, pipeline_dirs):
    from PIL import Image

    record = load_records(pipeline_dirs["dataset"], "test")[0]
    with Image.open(pipeline_dirs["dataset"] / "images" / record.image) as original:
        png = io.BytesIO()
        original.save(png, format="PNG")
    assert service.caption_images([decode_image(png.getvalue())])[0].text
