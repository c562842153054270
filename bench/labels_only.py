"""A fitted classifier without predict_proba: the labels-only twin bench.bench_classifier serves.

In a module of its own so that the pickle names an importable class (a class defined in the
bench's __main__ would not unpickle in the server).
"""
from sklearn.base import BaseEstimator, ClassifierMixin


class LabelsOnly(ClassifierMixin, BaseEstimator):
    """A fitted classifier's predict and classes_, and nothing of its probabilities."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        self.estimator.fit(X, y)
        return self.fitted()

    def fitted(self):
        self.classes_ = self.estimator.classes_
        return self

    def predict(self, X):
        return self.estimator.predict(X)
