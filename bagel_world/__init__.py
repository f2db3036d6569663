"""bagel-world: BAGEL Mixture-of-Transformers world models as Gymnasium environments."""

__version__ = "0.1.0"
