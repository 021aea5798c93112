"""Batch jobs over a bundle on Ray Data: ``image_sets`` renders every known shopper's set in advance."""
