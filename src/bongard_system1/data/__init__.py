"""Dataset generation, COCO files and the training dataset."""
