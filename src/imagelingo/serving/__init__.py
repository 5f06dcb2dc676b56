"""Serving the Captioner (imagelingo.inference) over KServe v1/v2.

protocol.py, images.py and request.py turn request bodies into images and options, and captions
into answers; handler.py (TorchServe) and kserve_predictor.py (the kserve SDK) are thin shells over
them that never import each other. package.py builds the MAR; store.py, torchserve.py, local.py
and client.py run and call servers on this machine."""
