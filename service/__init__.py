"""hebbian-service: a streaming online-learning gRPC service for Hebbian neural models.

Importing the package quiets TensorFlow's native start-up noise before anything in it can
import TensorFlow (`service.tf_noise`).
"""

from service import tf_noise

tf_noise.install()
