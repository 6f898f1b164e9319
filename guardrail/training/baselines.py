"""Baselines that `guardrail eval` reports beside the model, trained and run on the same split."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from guardrail.training.data import Example
from guardrail.values import VALUE_NAMES

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression


def _text(example: Example) -> str:
    return f"{example.prompt or ''}\n{example.response}"


def _vectorizer() -> TfidfVectorizer:
    """The baselines' features: TF-IDF of word 1-2 grams seen in at least two training texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)


def _logistic_regression() -> LogisticRegression:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, class_weight="balanced", C=4.0)


def tfidf_proba(train: list[Example], test: list[Example]) -> np.ndarray:
    """TF-IDF (word 1-2 grams) + one class-balanced logistic regression per value, fitted on
    ``train`` -> class probabilities for ``test`` (N, 10, 3): P(oppose), P(unrelated), P(support).

    A class never seen for a value in ``train`` gets probability 0 (a value never labelled at
    all: P(unrelated) = 1).
    """
    vectorizer = _vectorizer()
    x_train = vectorizer.fit_transform([_text(e) for e in train])
    x_test = vectorizer.transform([_text(e) for e in test])
    out = np.zeros((len(test), len(VALUE_NAMES), 3))
    out[:, :, 1] = 1.0
    for i in range(len(VALUE_NAMES)):
        y = np.array([e.label(i) or 0 for e in train])
        if len(set(y)) < 2:
            continue  # a value never labelled in training: "unrelated"
        clf = _logistic_regression()
        clf.fit(x_train, y)
        out[:, i] = 0.0
        out[:, i, np.asarray(clf.classes_) + 1] = clf.predict_proba(x_test)
    return out


def tfidf_binary(train_texts: list[str], train_labels: list[int], test_texts: list[str]) -> np.ndarray:
    """The same features and one class-balanced logistic regression for a yes/no label (e.g.
    "harmful?"), fitted on ``train_texts`` -> P(label = 1) for each of ``test_texts`` (N,)."""
    if len(set(train_labels)) < 2:
        raise ValueError(f"the baseline needs both labels among its training rows, got only {set(train_labels)}")
    vectorizer = _vectorizer()
    clf = _logistic_regression()
    clf.fit(vectorizer.fit_transform(train_texts), np.asarray(train_labels))
    proba: np.ndarray = clf.predict_proba(vectorizer.transform(test_texts))[:, 1]
    return proba


def tfidf_logreg(train: list[Example], test: list[Example]) -> np.ndarray:
    """The same baseline's labels for ``test`` -> (N, 10) in {-1, 0, 1}: its most probable class."""
    labels: np.ndarray = tfidf_proba(train, test).argmax(2) - 1
    return labels


def pyvalues_dictionary(test: list[Example]) -> np.ndarray:
    """The offline dictionary classifier of the PyPI package ``pyvalues`` -> (N, 10) labels.

    It finds which values a text invokes, not whether it supports or opposes them, so every
    detected value is reported as +1 and it can never flag a violation.
    """
    from pyvalues.dictionary_classifier import OriginalValuesDictionaryClassifier

    classifier = OriginalValuesDictionaryClassifier.get_default()
    found = classifier.classify_segments_for_original_values([e.response for e in test], language="en")
    out = np.zeros((len(test), len(VALUE_NAMES)), dtype=int)
    for n, values in enumerate(found):
        for i, name in enumerate(VALUE_NAMES):
            out[n, i] = 1 if float(getattr(values, name)) > 0 else 0
    return out
