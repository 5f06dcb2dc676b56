"""Inference: captioning with a trained model, in torch alone.

    captioner.py   Captioner: loads a model directory or a serving bundle; `caption_features`,
                   `caption_images` (one encoder pass, beam search per options); Caption
    decoder.py     the caption decoder (LSTM with soft attention) and batched beam search
    preprocess.py  EncoderSpec and `to_pixels`: an RGB image as the encoder sees it
    vocab.py       word ids <-> words
    options.py     beam width and maximum length
    errors.py      ImageLingoError

Everything that captions uses this package: training's validation, evaluation, the CLI and both
servers (serving/handler.py for TorchServe, serving/kserve_predictor.py for the kserve SDK). The
MAR ships it as it is (serving/package.py), so it runs where KServe's TorchServe runtime does:
Python 3.9, importing only torch, torchvision, Pillow, the standard library and its own modules
(relative imports). tests/test_runtime_compat.py checks both.
"""
