"""A fitted classifier without predict_proba: the labels-only twin bench.bench_classifier serves.

In a module of its own so that the pickle names an importable class (a class defined in the
bench's __main__ would not unpickle in the server).
"""


class LabelsOnly:
    """A fitted classifier's predict and classes_, and nothing of its probabilities."""
    _estimator_type = "classifier"

    def __init__(self, estimator):
        self.estimator = estimator
        self.classes_ = estimator.classes_

    def predict(self, X):
        return self.estimator.predict(X)

    def __sklearn_tags__(self):
        return self.estimator.__sklearn_tags__()
