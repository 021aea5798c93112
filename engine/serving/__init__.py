"""Serving: the one object the API holds (``service.Service``) and the parts of an image set.

``service`` holds the bundle and answers the storefront; ``personaliser`` composes one bundle's parts:
``catalogue`` (lookups, filters, popular and similar items), ``conditions`` (shopper vectors and p(condition |
shopper)), ``preference`` (generation, preference maximisation, diverse sets), ``grounding`` (real items behind
each image), ``image_ids`` (signed ids that regenerate an image), ``latents`` (the optimised latent
codes those ids refer to), ``cache`` and ``sessions``.
"""
