"""Datasets, augmentations and the LightningDataModule (sub-modules are imported on use)."""
