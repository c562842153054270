"""A classifier's class labels: one rendering of each label, everywhere.

A model's `classes_` may be strings, integers or booleans. The card stores them as JSON values of
that type, the API answers them as such, and /feedback takes them back as such. Where a label
must be text (metric label values, the keys of a `probabilities` object, CSV cells), `label_text`
renders it: the string itself, the integer in decimal, `true` or `false`. Every part of the
project renders labels with this function, so a class is the same string in the card, the API,
the metrics and the exporter.
"""
import numbers
import re

import numpy as np

# every class is a series per class pair in the confusion counter: 20 classes are 400 series
MAX_CLASSES = 20
MAX_LABEL_LENGTH = 64
STRING, INTEGER, BOOLEAN = "string", "integer", "boolean"
INTEGER_TEXT = re.compile(r"^[+-]?[0-9]+$")
BOOLEAN_TEXT = {"true": True, "True": True, "false": False, "False": False}


class ClassLabelError(ValueError):
    """A model's classes cannot be served as labels; the message says why in one line."""


def native(value):
    """`value` (a numpy scalar, or a Python one) as the plain Python value JSON writes."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        return str(value)
    raise ClassLabelError(f"class label {value!r} is a {type(value).__name__}; labels must be strings, integers "
                          "or booleans (cast the target before fitting)")


def label_type(value) -> str:
    """"string", "integer" or "boolean": the JSON type of a native label."""
    if type(value) is bool:
        return BOOLEAN
    if type(value) is int:
        return INTEGER
    if type(value) is str:
        return STRING
    raise ClassLabelError(f"class label {value!r} is not a string, an integer or a boolean")


def label_text(value) -> str:
    """The one text form of a label: a metric label value, a `probabilities` key, a CSV cell."""
    value = native(value)
    if type(value) is bool:
        return "true" if value else "false"
    return str(value)


def check_classes(classes) -> list:
    """The model's classes as native JSON values, or ClassLabelError: at least 2 and at most MAX_CLASSES,
    one type, distinct texts, each text printable and at most MAX_LABEL_LENGTH characters."""
    values = [native(c) for c in classes]
    if len(values) < 2:
        raise ClassLabelError(f"the model knows {len(values)} class; a classifier needs at least 2")
    if len(values) > MAX_CLASSES:
        raise ClassLabelError(f"the model has {len(values)} classes; at most {MAX_CLASSES} can be monitored "
                              "(the confusion counter has a series per pair)")
    types = {label_type(v) for v in values}
    if len(types) > 1:
        raise ClassLabelError(f"the model's classes mix {' and '.join(sorted(types))} labels")
    texts = [label_text(v) for v in values]
    if len(set(texts)) != len(texts):
        raise ClassLabelError("two of the model's classes have the same text")
    for text in texts:
        if not text or len(text) > MAX_LABEL_LENGTH or not text.isprintable():
            raise ClassLabelError(f"class label {text[:MAX_LABEL_LENGTH]!r} must be printable text of 1 to "
                                  f"{MAX_LABEL_LENGTH} characters")
    return values


class ClassIndex:
    """JSON label -> position in the card's classes; a label of another JSON type is unknown."""

    def __init__(self, classes: list):
        self.classes = list(classes)
        self.texts = [label_text(c) for c in self.classes]
        self._position = {(type(c), c): i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.classes)

    def find(self, value):
        """The position of `value` among the classes, or None (True is not 1, "1" is not 1)."""
        try:
            return self._position.get((type(value), value))
        except TypeError:  # an unhashable value (a list, an object) is no label
            return None


def parse_label(cell, kind: str):
    """The label a CSV cell (text) or a DataFrame cell holds, in the classes' type `kind`, or None.

    Onboarding reads the reference's target with it and the exporter the replay's, so that a row
    onboarding took as a class is sent as that class: integers are a sign and digits ("03" is 3,
    "1.0" is none), booleans true/True/false/False, strings as they are.
    """
    if isinstance(cell, str):
        cell = str(cell)  # np.str_ too
        if kind == STRING:
            return cell
        if kind == INTEGER:
            return int(cell) if INTEGER_TEXT.match(cell) else None
        return BOOLEAN_TEXT.get(cell)
    if isinstance(cell, (bool, np.bool_)):
        return bool(cell) if kind == BOOLEAN else None
    if isinstance(cell, numbers.Integral):
        return int(cell) if kind == INTEGER else None
    return None
