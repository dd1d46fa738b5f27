"""Keras models a recipe's factory builds (`_target_: compiler.frameworks.keras.models.NAME`)."""

from __future__ import annotations


def keras_two_input(image_shape: list, features: int, classes: int = 10, width: int = 16,
                    image_name: str = "image", features_name: str = "features"):
    """A Keras functional model over two inputs: a channels-last image and a feature vector."""
    import keras

    image = keras.Input(tuple(image_shape), name=image_name)
    extra = keras.Input((features,), name=features_name)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(width, activation="relu")(extra)])
    return keras.Model([image, extra], keras.layers.Dense(classes)(x))
