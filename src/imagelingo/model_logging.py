"""The captioner as an MLflow pyfunc model, logged by evaluation in the training image (torch is
there); imagelingo.registry registers what this logged and needs mlflow alone, so the deploy
image, which has no torch, never imports this module.

    log_captioner(model_dir, dataset_dir)   # in an active run: models:/<model id>
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from imagelingo.registry import LOGGED_MODEL


def example_image(dataset_dir: Path) -> bytes:
    """The input example: the first test image, shrunk to keep the logged example small."""
    import io

    from PIL import Image

    from imagelingo.data.dataset import load_records

    record = load_records(dataset_dir, "test")[0]
    with Image.open(Path(dataset_dir) / "images" / record.image) as image:
        image = image.convert("RGB")
        image.thumbnail((128, 128))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def log_captioner(model_dir: Path, dataset_dir: Path) -> str:
    """Log `model_dir` as a pyfunc model in the active run (its input example: one of
    `dataset_dir`'s test images); returns its models:/ URI.
    Code: imagelingo.mlflow_model and the torch-only inference package, nothing else of this
    project. Artifact: the serving bundle at fp32, so it captions as `imagelingo caption` does."""
    import mlflow
    import pandas as pd
    import PIL
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from imagelingo import mlflow_model
    from imagelingo.inference.options import Options

    package = Path(mlflow_model.__file__).parent
    signature = ModelSignature(
        inputs=Schema([ColSpec("binary", mlflow_model.IMAGE)]),
        outputs=Schema([ColSpec("string", mlflow_model.CAPTION)]),
        params=ParamSchema(
            [
                ParamSpec("beam_width", "long", Options.beam_width),
                ParamSpec("max_len", "long", Options.max_len),
            ]
        ),
    )
    with tempfile.TemporaryDirectory(prefix="imagelingo-pyfunc-") as tmp:
        bundle, code = Path(tmp) / "bundle", Path(tmp) / "imagelingo"
        write_bundle(Path(model_dir), bundle)
        shutil.copytree(package / "inference", code / "inference", ignore=_not_source)
        shutil.copy2(package / "__init__.py", code / "__init__.py")
        shutil.copy2(mlflow_model.__file__, code / "mlflow_model.py")
        info = mlflow.pyfunc.log_model(
            name=LOGGED_MODEL,
            python_model=mlflow_model.CaptionerModel(),
            artifacts={mlflow_model.BUNDLE: str(bundle)},
            code_paths=[str(code)],
            signature=signature,
            input_example=pd.DataFrame({mlflow_model.IMAGE: [example_image(dataset_dir)]}),
            # given, not inferred: inferring loads the model in a subprocess (slow)
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"torch=={torch.__version__.split('+')[0]}",
                f"pillow=={PIL.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )
    return info.model_uri


def write_bundle(model_dir: Path, bundle_dir: Path) -> None:
    """The model as a serving bundle (Captioner.load reads it with torch alone): the encoder
    traced to TorchScript as the MAR holds it (serving/package.py export_bundle, which a stage
    may not import), the decoder's state dict, config and vocabulary; no serving.json, so fp32."""
    import warnings

    import torch

    from imagelingo.captioning import load_captioner
    from imagelingo.inference.captioner import CONFIG_FILE, DECODER_FILE, ENCODER_FILE, VOCAB_FILE

    captioner = load_captioner(model_dir)
    size = captioner.spec.image_size
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        traced = torch.jit.trace(captioner.encoder, torch.rand(1, 3, size, size))
    bundle_dir.mkdir(parents=True)
    traced.save(str(bundle_dir / ENCODER_FILE))
    torch.save(captioner.decoder.state_dict(), bundle_dir / DECODER_FILE)
    for name in (CONFIG_FILE, VOCAB_FILE):
        shutil.copy2(model_dir / name, bundle_dir / name)


def _not_source(directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]
