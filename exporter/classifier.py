"""What the replay needs to know of a classifier: its classes, its positive class, whether it scores.

A card whose task is "classification" lists the model's classes as JSON values of one type
(target.classes, model/classes.py). The replay reads a CSV's target cells as those values, checks
that every predicted label is one of them, and posts, for a binary model with probabilities, the
positive class's probability as the feedback's score. Every label is compared by type and value
(model.classes.ClassIndex): the integer 1 is not the string "1", nor True.
"""
import re
from dataclasses import dataclass, field
from typing import Optional

from model.classes import BOOLEAN, INTEGER, ClassIndex, ClassLabelError, check_classes, label_text, label_type

CLASSIFICATION = "classification"
TASKS = ("regression", CLASSIFICATION)
# a CSV cell of an integer class: digits, maybe signed, maybe with a zero fraction (pandas writes 1.0 when a
# column of integers also has empty cells)
INTEGER_CELL = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
TRUE_CELLS = frozenset({"true", "1", "1.0"})  # as exporter.source reads a boolean feature
FALSE_CELLS = frozenset({"false", "0", "0.0"})


@dataclass(frozen=True)
class Classifier:
    classes: tuple  # native JSON labels, in the card's (the model's classes_) order
    positive: object = None  # the positive class of a binary model, else None
    probabilities: bool = False  # the API answers each class's probability
    reference: Optional[tuple] = None  # the share of each class among the reference rows' actuals, if the card has it
    index: ClassIndex = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "index", ClassIndex(self.classes))

    @property
    def kind(self) -> str:
        return label_type(self.classes[0])

    @property
    def texts(self) -> list:
        return self.index.texts

    @property
    def score_key(self) -> Optional[str]:
        """The `probabilities` key whose value is the feedback's score, or None: binary models that score only."""
        return label_text(self.positive) if self.positive is not None and self.probabilities else None

    def position(self, label) -> Optional[int]:
        return self.index.find(label)

    def parse(self, text) -> object:
        """The class a CSV cell (or a --scenario-class value) names, or None: "1" is 1 for integer classes,
        true/false (any case) or 1/0 a boolean, a string class the text as written."""
        if not isinstance(text, str):
            return None
        kind = self.kind
        if kind == INTEGER:
            cell = text.strip()
            value = int(cell.split(".")[0]) if INTEGER_CELL.fullmatch(cell) else None
        elif kind == BOOLEAN:
            cell = text.strip().lower()
            value = True if cell in TRUE_CELLS else False if cell in FALSE_CELLS else None
        else:
            value = text
        return None if value is None or self.index.find(value) is None else value

    def described(self) -> str:
        """The classes as a person reads them: `0, 1`, at most 10 of them."""
        shown = ", ".join(self.texts[:10])
        return shown + (f", ... ({len(self.classes)} classes)" if len(self.classes) > 10 else "")


def task_of(card: dict) -> str:
    """The card's task; a card that says none is a regressor's, as every card was before classifiers."""
    return card.get("task") or "regression"


def classifier_of(card: dict) -> Optional[Classifier]:
    """The card's classes as a Classifier (None for a regressor); ValueError saying what is wrong with them."""
    if task_of(card) != CLASSIFICATION:
        return None
    target = card.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("classes"), list):
        raise ValueError("a classifier's card must list its classes (target.classes)")
    try:
        classes = tuple(check_classes(target["classes"]))
    except ClassLabelError as exc:
        raise ValueError(f"target.classes: {exc}") from None
    index = ClassIndex(classes)
    positive = target.get("positive_class")
    if positive is not None and index.find(positive) is None:
        raise ValueError(f"target.positive_class {positive!r} is not one of target.classes")
    return Classifier(classes, positive, target.get("probabilities") is True, _reference_shares(card, index))


def _reference_shares(card: dict, index: ClassIndex) -> Optional[tuple]:
    """reference.actual's share of each class, in class order; None if the card has no usable one."""
    actual = (card.get("reference") or {}).get("actual") if isinstance(card.get("reference"), dict) else None
    if not isinstance(actual, dict):
        return None
    bins, fractions = actual.get("bins"), actual.get("fractions")
    if not (isinstance(bins, list) and isinstance(fractions, list) and len(bins) == len(fractions)):
        return None
    by_text = dict(zip(bins, fractions))
    shares = tuple(by_text.get(text) for text in index.texts)
    if any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in shares):
        return None
    return tuple(float(s) for s in shares)
