"""A tiny NLTK averaged-perceptron POS tagger (the paper's tagger) trained offline on a few Penn-tagged sentences."""

from __future__ import annotations

#: A few Penn-tagged sentences: enough for an averaged perceptron to tag the test sentences (no NLTK download).
_PENN_TAGGED = (
    "The/DT dog/NN barks/VBZ loudly/RB ./.",
    "A/DT piano/NN plays/VBZ in/IN the/DT room/NN ./.",
    "It/PRP could/MD be/VB a/DT rooster/NN ./.",
    "There/EX are/VBP 3/CD beeps/NNS and/CC silence/NN ./.",
    "The/DT melody/NN rises/VBZ slowly/RB and/CC falls/VBZ ./.",
    "She/PRP speaks/VBZ calmly/RB in/IN the/DT rain/NN ./.",
    "The/DT loud/JJ engine/NN hums/VBZ ./.",
    "It/PRP barks/VBZ at/IN the/DT loud/JJ car/NN ./.",
    "Why/WRB could/MD it/PRP be/VB a/DT piano/NN ?/.",
)


def tiny_perceptron_tagger():
    """NLTK's averaged perceptron (the paper's tagger) trained offline on :data:`_PENN_TAGGED`; needs ``nltk``.

    Training shuffles with the global ``random`` module, so it is seeded and the caller's random state restored.
    """
    import random

    from nltk.tag.perceptron import PerceptronTagger

    state = random.getstate()
    random.seed(0)
    try:
        model = PerceptronTagger(load=False)
        sentences = [[tuple(tok.rsplit("/", 1)) for tok in s.split()] for s in _PENN_TAGGED]
        model.train(
            sentences * 25, nr_iter=5
        )  # x25: every word reaches the tag-dictionary frequency threshold
    finally:
        random.setstate(state)
    return model
