"""Segmentation experiment harness comparing augmentation policies."""
