"""ImageLingo: Flickr8k image captioning (CNN encoder + LSTM decoder with soft attention).

Every pipeline stage is a plain function in this package; the CLI, KFP components, dvc.yaml and
the serving code are thin adapters over them.
"""

__version__ = "0.1.0"
