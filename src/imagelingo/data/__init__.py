"""Datasets: Flickr8k parsing and download, the synthetic scenes, text."""
