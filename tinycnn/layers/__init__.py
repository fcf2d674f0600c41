"""The layers. Each is one class with ``forward`` and ``backward``; read any one on its own.

=============  ======================================  ==============================
layer          forward                                 parameters
=============  ======================================  ==============================
Conv2D         im2col, then cols @ kernel + bias       kernel (KH, KW, C, F), bias (F,)
MaxPool2D      maximum of each window                  none
Dense          x @ kernel + bias                       kernel (in, out), bias (out,)
ReLU           max(x, 0)                               none
Softmax        exp(x) / sum(exp(x))                    none
Flatten        (N, ...) -> (N, -1)                     none
Reshape        (N, ...) -> (N, *target_shape)          none
BatchNorm...   normalise each channel, scale, shift    gamma, beta (C,); moving stats
Dropout        zero units at random (training only)    none
RandomRot...   rotate each image (training only)       none
RandomTrans... shift each image (training only)        none
=============  ======================================  ==============================
"""

from .activations import ReLU, Softmax
from .augmentation import RandomRotation, RandomTranslation
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .normalization import BatchNormalization
from .pooling import MaxPool2D
from .reshaping import Flatten, Reshape

__all__ = ["Layer", "Conv2D", "MaxPool2D", "Dense", "ReLU", "Softmax", "Flatten", "Reshape",
           "BatchNormalization", "Dropout", "RandomRotation", "RandomTranslation"]

#: Every layer class by name: how ``load_model`` turns a saved architecture back into layers.
LAYERS = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, Dense, ReLU, Softmax, Flatten, Reshape,
                                        BatchNormalization, Dropout, RandomRotation, RandomTranslation)}
