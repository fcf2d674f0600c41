"""The layers. Each is one class with ``forward`` and ``backward``; read any one on its own.

======================  ====================================  =================================
layer                   forward                               parameters
======================  ====================================  =================================
Conv2D                  im2col, then cols @ kernel + bias     kernel (KH, KW, C, F), bias (F,)
MaxPool2D               maximum of each window                none
AveragePooling2D        average of each window                none (also named AvgPool2D)
GlobalAveragePooling2D  average of each channel               none (also named GlobalAvgPool2D)
Dense                   x @ kernel + bias                     kernel (in, out), bias (out,)
ReLU                    max(x, 0)                             none
LeakyReLU               x if x > 0 else alpha * x             none (alpha=0.3, as Keras)
Sigmoid                 1 / (1 + exp(-x))                     none
Tanh                    tanh(x)                               none
Softmax                 exp(x) / sum(exp(x))                  none
Flatten                 (N, ...) -> (N, -1)                   none
Reshape                 (N, ...) -> (N, *target_shape)        none
BatchNormalization      normalise each channel, scale, shift  gamma, beta (C,); moving stats
Dropout                 zero units at random (training only)  none
RandomRotation          rotate each image (training only)     none
RandomTranslation       shift each image (training only)      none
======================  ====================================  =================================

Every subclass of ``Layer`` -- these, and any you define in your own code -- is registered in
``LAYERS`` by its class definition; ``layers/base.py`` says how to add one.
"""

from .activations import Activation, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .augmentation import RandomRotation, RandomTranslation
from .base import LAYERS, Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .normalization import BatchNormalization
from .input import Input, InputLayer
from .pooling import AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, GlobalAvgPool2D, MaxPool2D
from .reshaping import Flatten, Reshape

#: Keras's long name for max-pooling; the same class, so a saved model names it once.
MaxPooling2D = MaxPool2D

__all__ = ["Layer", "LAYERS", "Input", "InputLayer", "Conv2D", "MaxPool2D", "MaxPooling2D", "AveragePooling2D",
           "AvgPool2D", "GlobalAveragePooling2D", "GlobalAvgPool2D", "Dense", "Activation", "ReLU", "LeakyReLU",
           "Sigmoid", "Tanh", "Softmax", "Flatten", "Reshape", "BatchNormalization", "Dropout", "RandomRotation",
           "RandomTranslation"]
