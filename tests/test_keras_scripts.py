"""Keras MNIST scripts run on tinycnn with their imports rewritten, and nothing else changed.

Each script below is written as the Keras tutorials and students' projects write it, for Keras 2
(``tensorflow.keras``, ``tf.keras``) or Keras 3 (``keras``). :func:`rewrite` applies the rule a
learner applies -- ``tensorflow.keras``, ``tf.keras`` or ``keras`` becomes ``tinycnn`` in import
lines and dotted names -- and the test runs the result on small offline data standing in for
MNIST (``mnist.load_data`` returns a learnable 10-class task of 28x28 uint8 images), in a
temporary folder, with matplotlib drawing to files. Each script checks what it printed or saved.
"""

import os
import re
import warnings

import numpy as np
import pytest

KERAS2_CNN = '''
import numpy as np
import tensorflow as tf
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Conv2D, MaxPooling2D, Dropout, Flatten, Dense
from tensorflow.keras.callbacks import EarlyStopping
import matplotlib.pyplot as plt

(x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()
x_train = x_train.reshape(-1, 28, 28, 1) / 255.0
x_test = x_test.reshape(-1, 28, 28, 1) / 255.0

model = Sequential([
    Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
    MaxPooling2D((2, 2)),
    Conv2D(64, (3, 3), activation='relu'),
    MaxPooling2D((2, 2)),
    Dropout(0.25),
    Flatten(),
    Dense(64, activation='relu'),
    Dense(10, activation='softmax'),
])
model.summary()
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
early = EarlyStopping(monitor='val_loss', patience=3, restore_best_weights=True, verbose=1)
history = model.fit(x_train, y_train, epochs=EPOCHS, batch_size=32, validation_split=0.1, callbacks=[early])
test_loss, test_acc = model.evaluate(x_test, y_test, verbose=2)
print('Test accuracy:', test_acc)
model.save('mnist_cnn.h5')
restored = tf.keras.models.load_model('mnist_cnn.h5')
predictions = restored.predict(x_test[:5])
print('Predicted:', np.argmax(predictions, axis=1), 'true:', y_test[:5])

plt.plot(history.history['accuracy'], label='train')
plt.plot(history.history['val_accuracy'], label='validation')
plt.xlabel('epoch')
plt.legend()
plt.savefig('history.png')
RESULT = test_acc
'''

KERAS2_ONE_HOT = '''
from tensorflow import keras
from tensorflow.keras import layers
from tensorflow.keras.utils import to_categorical

(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train = x_train.astype('float32') / 255
x_test = x_test.astype('float32') / 255
x_train = x_train.reshape((x_train.shape[0], 28, 28, 1))
x_test = x_test.reshape((x_test.shape[0], 28, 28, 1))
y_train = to_categorical(y_train)
y_test = to_categorical(y_test, num_classes=10)

model = keras.models.Sequential()
model.add(layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)))
model.add(layers.MaxPool2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation='relu'))
model.add(layers.MaxPool2D((2, 2)))
model.add(layers.Flatten())
model.add(layers.Dropout(0.5))
model.add(layers.Dense(10, activation='softmax'))
model.compile(optimizer='Adam', loss='categorical_crossentropy', metrics=['acc'])
history = model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64,
                    validation_data=(x_test, y_test), verbose=2)
print(sorted(history.history))
score = model.evaluate(x_test, y_test, verbose=0)
print('Test loss:', score[0])
print('Test accuracy:', score[1])
RESULT = score[1]
'''

KERAS3 = '''
import keras
from keras import layers

(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train = x_train.astype("float32") / 255
x_test = x_test.astype("float32") / 255
x_train = x_train[..., None]
x_test = x_test[..., None]

model = keras.Sequential(
    [
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ]
)
model.compile(loss="sparse_categorical_crossentropy", optimizer="rmsprop",
              metrics=["sparse_categorical_accuracy"])
callbacks = [
    keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1),
    keras.callbacks.CSVLogger("training.csv"),
]
model.fit(x_train, y_train, batch_size=128, epochs=EPOCHS, validation_split=0.1, callbacks=callbacks)
score = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
print(score)
model.save_weights("mnist.weights.h5")
fresh = keras.Sequential([keras.Input(shape=(28, 28, 1)), layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
                          layers.MaxPooling2D(pool_size=(2, 2)), layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
                          layers.MaxPooling2D(pool_size=(2, 2)), layers.Flatten(), layers.Dropout(0.5),
                          layers.Dense(10, activation="softmax")])
fresh.load_weights("mnist.weights.h5")
assert (fresh.predict(x_test[:8], verbose=0) == model.predict(x_test[:8], verbose=0)).all()
RESULT = score["sparse_categorical_accuracy"]
'''

TF_BEGINNER_MLP = '''
import tensorflow as tf

mnist = tf.keras.datasets.mnist
(x_train, y_train), (x_test, y_test) = mnist.load_data()
x_train, x_test = x_train / 255.0, x_test / 255.0

model = tf.keras.models.Sequential([
  tf.keras.layers.Flatten(input_shape=(28, 28)),
  tf.keras.layers.Dense(128, activation='relu'),
  tf.keras.layers.Dropout(0.2),
  tf.keras.layers.Dense(10)
])
loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile(optimizer='adam', loss=loss_fn, metrics=['accuracy'])
model.fit(x_train, y_train, epochs=EPOCHS)
loss, acc = model.evaluate(x_test,  y_test, verbose=2)
RESULT = acc
'''

SCRIPTS = {"keras2_cnn": KERAS2_CNN, "keras2_one_hot": KERAS2_ONE_HOT, "keras3": KERAS3,
           "tf_beginner_mlp": TF_BEGINNER_MLP}


def rewrite(source):
    """The learner's rule: the imports and dotted names of Keras become tinycnn's."""
    rules = [(r"^from tensorflow import keras$", "import tinycnn as keras"),
             (r"^import tensorflow as tf$", "import tinycnn"),
             (r"^import keras$", "import tinycnn as keras"),
             (r"\btensorflow\.keras\b", "tinycnn"),
             (r"\btf\.keras\b", "tinycnn"),
             (r"^from keras\b", "from tinycnn")]
    for pattern, replacement in rules:
        source = re.sub(pattern, replacement, source, flags=re.M)
    return source


def stand_in_mnist(n_train=1000, n_test=200, seed=0):
    """MNIST's shapes and dtypes, uint8 28x28 images and int labels, for a task any of these
    networks learns in a few epochs: each class a fixed pattern of 4x4 blocks, plus noise."""
    rng = np.random.default_rng(seed)
    blocks = np.random.default_rng(42).integers(0, 2, size=(10, 7, 7)) * 180
    patterns = blocks.repeat(4, axis=1).repeat(4, axis=2)           # (10, 28, 28)

    def draw(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = patterns[y] + rng.integers(0, 60, size=(n, 28, 28))
        return np.clip(x, 0, 255).astype(np.uint8), y

    return draw(n_train), draw(n_test)


def test_the_rewrite_changes_only_imports_and_dotted_names():
    for source in SCRIPTS.values():
        changed = [(a, b) for a, b in zip(source.splitlines(), rewrite(source).splitlines()) if a != b]
        assert changed and all(("keras" in a or "tensorflow" in a) and "tinycnn" in b for a, b in changed)
        assert "tensorflow" not in rewrite(source) and "tf.keras" not in rewrite(source)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_keras_script_runs_with_its_imports_rewritten(name, tmp_path, monkeypatch, capsys):
    import tinycnn.datasets.mnist
    data = stand_in_mnist()
    monkeypatch.setattr(tinycnn.datasets.mnist, "load_data", lambda *a, **k: data)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__main__", "EPOCHS": 3}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(rewrite(SCRIPTS[name]), f"<{name}>", "exec"), scope)
    out = capsys.readouterr().out
    assert scope["RESULT"] > 0.9, (name, scope["RESULT"])      # chance is 0.1
    if name == "keras2_cnn":
        assert "Test accuracy:" in out and "Predicted:" in out and os.path.getsize("history.png") > 1000
        assert re.search(r"\d+/\d+ - [\d.]+s - loss: [\d.]+ - accuracy: [\d.]+", out)      # verbose=2
        assert any("writes tinycnn's own format" in str(w.message) for w in caught)     # the .h5 name
    if name == "keras2_one_hot":
        assert "['acc', 'loss', 'val_acc', 'val_loss']" in out
    if name == "keras3":
        header = open("training.csv").readline().strip().split(",")
        assert header[0] == "epoch" and "val_sparse_categorical_accuracy" in header
