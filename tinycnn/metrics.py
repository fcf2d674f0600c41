"""The one metric tinycnn computes besides the loss: accuracy, the share of samples whose largest
output is their class. Keras knows it under several names; ``compile(metrics=[name])`` logs it
under the name it was given, as Keras does."""

#: Keras's names for accuracy.
ACCURACY_NAMES = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")
