"""facevae: a tf.data-centric variational autoencoder for 96x96 faces in TensorFlow 2.

Installed, the repository is the package `facevae`: `facevae.pipeline` (the dataset, written
and read), `facevae.model` (networks, training, sampling, evaluation), `facevae.tools`
(command-line tools) and the commands `facevae.train`, `facevae.sample`, `facevae.evaluate`.
The README's "Layout" section says which module holds what.
"""

__version__ = "0.1.0"
