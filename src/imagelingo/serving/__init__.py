"""Inference outside any server: request parsing (KServe v1/v2), image decoding, batched
captioning. The TorchServe handler and the KServe predictor are thin shells over this package."""
