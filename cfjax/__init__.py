"""cfjax: counterfactual GANs whose discriminator is the classifier (Bischof et al. 2023)."""

__version__ = "0.2.0"
