"""The fast input path: validated tuples -> numpy matrix -> the pipeline's regressor.

A pandas DataFrame per request costs milliseconds in ColumnTransformer; this
encoder builds the very same matrix with a few numpy writes.  It reads the
layout (column order, one-hot categories) from the fitted ColumnTransformer
itself, and `self_check` refuses to serve if its matrix differs from
``ColumnTransformer.transform`` on probe rows covering every category, an
unknown one and nulls, so the fast path cannot drift from the pipeline.
"""
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from model.card import ModelIntegrityError

UNSEEN_PROBE = "__never_seen_category__"


class FastPredictor:
    def __init__(self, pipeline, feature_names: list):
        prep, self.regressor = pipeline[:-1], pipeline[-1]
        transformer = prep[-1] if len(prep) == 1 else None
        if not isinstance(transformer, ColumnTransformer):
            raise ModelIntegrityError("fast path needs Pipeline([ColumnTransformer, regressor])")
        self.transformer = transformer
        self.feature_names = list(feature_names)
        position = {name: i for i, name in enumerate(self.feature_names)}
        expected = list(getattr(transformer, "feature_names_in_", []))
        if sorted(expected) != sorted(self.feature_names):
            missing = sorted(set(expected) - set(self.feature_names))
            extra = sorted(set(self.feature_names) - set(expected))
            raise ModelIntegrityError(f"model card features differ from the pipeline's columns: the card lacks "
                                      f"{missing or 'none'}, and lists {extra or 'none'} the pipeline never saw")
        self.width = transformer.output_indices_[transformer.transformers_[-1][0]].stop
        self.numeric_src, self.numeric_dst = [], []
        self.onehots = []  # (source position, {category: output column})
        for name, step, columns in transformer.transformers_:
            out = transformer.output_indices_[name]
            if step == "drop" or out.start == out.stop:
                continue
            if isinstance(step, FunctionTransformer) and step.func is None:  # "passthrough"
                self.numeric_src += [position[c] for c in columns]
                self.numeric_dst += list(range(out.start, out.stop))
            elif isinstance(step, OneHotEncoder) and step.handle_unknown == "ignore" and step.drop is None:
                col = out.start
                for column, categories in zip(columns, step.categories_):
                    lookup = {}
                    for category in categories:
                        if isinstance(category, str):
                            lookup[category] = col
                        elif category is None or category != category:  # missing was seen in training
                            lookup[None] = col
                        col += 1
                    self.onehots.append((position[column], lookup))
            else:
                raise ModelIntegrityError(f"fast path cannot encode transformer {name!r} ({type(step).__name__})")
        self._predict_encoded = self._target_shortcut(self.regressor) or self.regressor.predict

    @staticmethod
    def _target_shortcut(model):
        """For TransformedTargetRegressor(func=..., inverse_func=...): inverse_func(inner.predict(X)).

        The same arithmetic as model.predict, without FunctionTransformer's per-call input checks,
        which cost about a third of a one-row prediction.
        """
        if not isinstance(model, TransformedTargetRegressor):
            return None
        transformer = model.transformer_
        inverse = getattr(transformer, "inverse_func", None)
        if not isinstance(transformer, FunctionTransformer) or inverse is None or transformer.inv_kw_args:
            return None
        inner = model.regressor_
        return lambda X: inverse(inner.predict(X).reshape(-1, 1)).ravel()

    def encode(self, rows: list) -> np.ndarray:
        """Rows are tuples in feature order (None = missing) -> the regressor's input matrix."""
        X = np.zeros((len(rows), self.width))
        numeric = np.array([[row[i] for i in self.numeric_src] for row in rows], dtype=float)  # None -> NaN
        X[:, self.numeric_dst] = numeric
        for src, lookup in self.onehots:
            for r, row in enumerate(rows):
                col = lookup.get(row[src])
                if col is not None:
                    X[r, col] = 1.0
        return X

    def predict(self, rows: list) -> np.ndarray:
        return self.predict_encoded(self.encode(rows))

    def predict_encoded(self, X: np.ndarray) -> np.ndarray:
        return self._predict_encoded(X)

    def slow_matrix(self, rows: list) -> np.ndarray:
        """The reference: ColumnTransformer over a DataFrame, as pipeline.predict does it."""
        frame = pd.DataFrame(rows, columns=self.feature_names)
        return self.transformer.transform(frame)

    def check_kinds(self, card_features: list) -> None:
        """Refuse a card whose kinds or categories are not the pipeline's: a numeric feature the pipeline
        one-hot encodes (or the other way round), or categories other than its encoder's."""
        numeric = {self.feature_names[i] for i in self.numeric_src}
        known = {self.feature_names[src]: {c for c in lookup if c is not None} for src, lookup in self.onehots}
        for f in card_features:
            encoded = "numeric" if f["name"] in numeric else "categorical" if f["name"] in known else None
            if encoded is not None and encoded != f["kind"]:
                raise ModelIntegrityError(f"model card says feature {f['name']!r} is {f['kind']}, "
                                          f"the pipeline encodes it as {encoded}")
            if encoded == "categorical" and set(f["categories"]) != known[f["name"]]:
                raise ModelIntegrityError(f"model card categories of {f['name']!r} differ from the pipeline's "
                                          f"encoder: {sorted(set(f['categories']) ^ known[f['name']])}")

    def self_check(self, card_features: list) -> None:
        """Refuse to serve if the fast matrix differs from the pipeline's on probe rows."""
        self.check_kinds(card_features)
        probes = []
        longest = max([len(f.get("categories", [])) for f in card_features] + [1]) + 2
        for i in range(longest):
            row = []
            for f in card_features:
                if f["kind"] == "numeric":
                    choices = [f.get("train_min", 0.0), f.get("train_max", 1.0), None]
                else:
                    choices = list(f.get("categories", [])) + [UNSEEN_PROBE, None]
                row.append(choices[i % len(choices)])
            probes.append(tuple(row))
        fast, slow = self.encode(probes), self.slow_matrix(probes)
        if fast.shape != slow.shape or not np.array_equal(fast, slow, equal_nan=True):
            raise ModelIntegrityError("fast input path disagrees with the pipeline's ColumnTransformer: refusing to serve")
