"""Hold out a validation share of a dataset, stratified for every tag.

    train, held_out = split(y, share=0.2, multilabel=True, seed=0)  # y: [images, tags] of 0/1

Multiclass sets use scikit-learn's stratified split. Multilabel sets use iterative
stratification (Sechidis, Tsoumakas and Vlahavas, "On the Stratification of Multi-Label
Data", ECML PKDD 2011): the tag with the fewest unassigned images is placed first, each
of its images going to the subset that still wants the most of that tag. A random split
can leave a tag with 20 of 60 images without a single held-out image; this one holds out
about the share of every tag.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def split(y: np.ndarray, share: float, multilabel: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the training and the held-out images."""
    truth = np.asarray(y).astype(bool)
    if multilabel:
        held_out = iterative_stratification(truth, share, np.random.default_rng(seed))
        indices = np.arange(len(truth))
        return indices[~held_out], indices[held_out]
    n_val = max(round(len(truth) * share), truth.shape[1])  # at least one image of each tag
    train, val = train_test_split(np.arange(len(truth)), test_size=n_val, random_state=seed,
                                  stratify=truth.argmax(1))
    return np.sort(train), np.sort(val)


def iterative_stratification(truth: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of the held-out images: two subsets, desired sizes (1 - share) and share."""
    ratios = np.array([1 - share, share])
    wanted = ratios * len(truth)  # images each subset still wants
    wanted_per_tag = np.outer(ratios, truth.sum(0)).astype(np.float64)  # [subset, tag]
    subset = np.full(len(truth), -1)
    unassigned = np.ones(len(truth), bool)
    while True:
        remaining = truth[unassigned].sum(0)
        if not remaining.any():
            break
        fewest = np.flatnonzero(remaining == remaining[remaining > 0].min())
        tag = rng.choice(fewest)
        for image in rng.permutation(np.flatnonzero(unassigned & truth[:, tag])):
            chosen = _most_wanting(wanted_per_tag[:, tag], wanted, rng)
            subset[image] = chosen
            unassigned[image] = False
            wanted_per_tag[chosen] -= truth[image]
            wanted[chosen] -= 1
    for image in rng.permutation(np.flatnonzero(unassigned)):  # images without tags fill up the sizes
        chosen = _most_wanting(wanted, wanted, rng)
        subset[image] = chosen
        wanted[chosen] -= 1
    return np.asarray(subset == 1)


def _most_wanting(for_tag: np.ndarray, overall: np.ndarray, rng: np.random.Generator) -> int:
    """The subset that wants the most of this tag; ties go to the one that wants the most
    images, then to chance."""
    best = np.flatnonzero(for_tag == for_tag.max())
    if len(best) > 1:
        best = best[overall[best] == overall[best].max()]
    return int(rng.choice(best))
