import numpy as np
import pytest

from embedkit.heads.zeroshot import probabilities, sample_prompts, scores

from .conftest import text_set


def orthogonal_prompts(d=8):
    rng = np.random.default_rng(0)
    basis = np.eye(d)
    return {c: basis[c] + 0.01 * rng.normal(size=(4, d)) for c in range(3)}


@pytest.mark.parametrize("fmt", ["clip", "gloria", "cxrclip"])
def test_image_equal_to_a_class_prompt_is_that_class(fmt):
    prompts = orthogonal_prompts()
    text = text_set(prompts)
    images = np.stack([prompts[c][0] for c in (2, 0, 1, 1)])
    p = probabilities(images, text, fmt, n_classes=3, logit_scale=100.0, rng=np.random.default_rng(0))
    assert list(p.argmax(1)) == [2, 0, 1, 1]
    np.testing.assert_allclose(p.sum(1), 1)


def test_scoring_rules_by_hand():
    e = np.eye(3)
    text = text_set({0: np.array([e[0], e[1]]), 1: np.array([e[2]]), 2: np.array([-e[0]])})
    img = np.array([[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(scores(img, text, "cxrclip", n_classes=3, logit_scale=1.0), [[0.5, 0.0, -1.0]])
    # clip: renormalised mean of prompts for class 0 is (e0 + e1)/sqrt(2)
    np.testing.assert_allclose(scores(img, text, "clip", n_classes=3, logit_scale=1.0), [[1 / np.sqrt(2), 0.0, -1.0]])
    # gloria: max over prompts; columns standardised over images
    imgs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    s = scores(imgs, text, "gloria", n_classes=3, logit_scale=1.0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(s, [[1, -1, -1], [-1, 1, 1]], atol=1e-9)  # class 2: cos -1 vs 0


def test_sampling_is_seeded_and_capped():
    text = text_set({0: np.ones((10, 3)), 1: np.ones((2, 3)), 2: np.ones((7, 3))})
    a = sample_prompts(text, 3, 5, np.random.default_rng(1))
    b = sample_prompts(text, 3, 5, np.random.default_rng(1))
    assert [len(i) for i in a] == [5, 2, 5] and all((x == y).all() for x, y in zip(a, b))


def test_cxrclip_draws_prompts_per_image_and_seed():
    """CXR-CLIP's evaluator: every image averages its own random 10 of a class's prompts."""
    rng = np.random.default_rng(0)
    text = text_set({c: rng.normal(size=(30, 8)) for c in range(3)})
    img = rng.normal(size=(50, 8))
    a, b = (scores(img, text, "cxrclip", n_classes=3, logit_scale=1.0, rng=np.random.default_rng(s)) for s in (1, 2))
    again = scores(img, text, "cxrclip", n_classes=3, logit_scale=1.0, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, b)
    # unbiased: averaged over many seeds, the score tends to the mean over all prompts
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    full = np.stack([(unit(img) @ unit(text.embeddings[text.class_index == c]).T).mean(1) for c in range(3)], 1)
    many = np.mean([scores(img, text, "cxrclip", n_classes=3, logit_scale=1.0, rng=np.random.default_rng(s))
                    for s in range(300)], axis=0)
    np.testing.assert_allclose(many, full, atol=0.02)
